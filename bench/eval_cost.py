"""What COCO evaluation costs: the project's coco_bbox_stats (faster-coco-eval) against plain
pycocotools on one large generated set of detections, with the stats shown identical.

    python bench/eval_cost.py [--images 2000] [--repeats 3] [--seed 0]

Ground truth: up to 7 boxes per image over 4 non-contiguous categories and every COCO area
range; detections: 5 jittered copies of each box (a fifth with a wrong category) and 20 random
false positives per image. Both evaluators are timed alternately in one process; the table
gives the median of the repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gdrq_bench.metrics.coco_eval import STAT_NAMES, coco_bbox_stats

CATEGORIES = np.array([3, 7, 12, 20])


def generate(images: int, seed: int) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 8, images)
    image_of = np.repeat(np.arange(1, images + 1), counts)
    sizes = rng.uniform(5, 200, (len(image_of), 2))
    corners = rng.uniform(0, [400, 300], (len(image_of), 2))
    boxes = np.hstack([corners, sizes])
    categories = rng.choice(CATEGORIES, len(image_of))
    annotations = [
        {"id": i + 1, "image_id": int(img), "category_id": int(cat), "bbox": box.tolist(),
         "area": float(box[2] * box[3]), "iscrowd": 0}
        for i, (img, cat, box) in enumerate(zip(image_of, categories, boxes))
    ]  # fmt: skip
    copies = np.repeat(np.arange(len(image_of)), 5)
    jittered = np.hstack(
        [
            boxes[copies, :2] + rng.normal(0, 5, (len(copies), 2)),
            boxes[copies, 2:] * rng.uniform(0.8, 1.2, (len(copies), 2)),
        ]
    )
    wrong = rng.random(len(copies)) < 0.2
    det_categories = np.where(wrong, rng.choice(CATEGORIES, len(copies)), categories[copies])
    noise_images = np.repeat(np.arange(1, images + 1), 20)
    noise = np.hstack(
        [rng.uniform(0, 400, (len(noise_images), 2)), rng.uniform(5, 150, (len(noise_images), 2))]
    )
    detections = [
        {"image_id": int(img), "category_id": int(cat), "bbox": box.tolist(), "score": float(s)}
        for img, cat, box, s in zip(
            np.concatenate([image_of[copies], noise_images]),
            np.concatenate([det_categories, rng.choice(CATEGORIES, len(noise_images))]),
            np.vstack([jittered, noise]),
            np.concatenate([rng.random(len(copies)), 0.5 * rng.random(len(noise_images))]),
        )
    ]
    dataset = {
        "images": [{"id": i, "width": 640, "height": 480} for i in range(1, images + 1)],
        "categories": [{"id": int(c), "name": f"class{c}"} for c in CATEGORIES],
        "annotations": annotations,
    }
    return dataset, detections


def ground_truth(dataset: dict) -> COCO:
    """A pycocotools COCO, as the detection task holds its validation set."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def pycocotools_stats(coco: COCO, detections: list[dict]) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(detections)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) * 100.0 for name, v in zip(STAT_NAMES, evaluator.stats)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dataset, detections = generate(args.images, args.seed)
    coco = ground_truth(dataset)
    times: dict[str, list[float]] = {"pycocotools": [], "gdrq_bench": []}
    results = {}
    for _ in range(args.repeats):
        for name, evaluate in (("pycocotools", pycocotools_stats), ("gdrq_bench", coco_bbox_stats)):
            start = time.perf_counter()
            results[name] = evaluate(coco, detections)
            times[name].append(time.perf_counter() - start)
    identical = results["pycocotools"] == results["gdrq_bench"]
    base = statistics.median(times["pycocotools"])
    print(
        f"{args.images} images, {len(dataset['annotations'])} boxes, {len(detections)} "
        f"detections, median of {args.repeats}; the 12 stats identical: {identical}\n"
    )
    print("| evaluator | median (s) | / pycocotools | bbox_ap |\n|---|---:|---:|---:|")
    for name, measured in times.items():
        median = statistics.median(measured)
        print(f"| {name} | {median:.2f} | {median / base:.2f} | {results[name]['bbox_ap']:.4f} |")
    if not identical:
        raise SystemExit("the stats differ")


if __name__ == "__main__":
    main()
