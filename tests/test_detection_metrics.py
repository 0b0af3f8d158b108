"""Detection metrics: VOC AP / mAP against hand computations, COCO stats against pycocotools."""

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gdrq_bench.metrics.coco_eval import STAT_NAMES, coco_bbox_stats
from gdrq_bench.metrics.voc_map import box_iou, voc_average_precision, voc_map

# ---------------------------------------------------------------------------- voc_average_precision


def test_ap_three_point_curve_both_modes() -> None:
    # Detections TP, FP, TP with npos = 2: recall .5, .5, 1; precision 1, .5, 2/3.
    rec = np.array([0.5, 0.5, 1.0])
    prec = np.array([1.0, 0.5, 2 / 3])
    # All points: envelope is 1 on (0, .5] and 2/3 on (.5, 1] -> .5 * 1 + .5 * 2/3 = 5/6.
    assert voc_average_precision(rec, prec) == pytest.approx(5 / 6)
    # 11 points: t = 0 .. .5 (6 values) -> 1; t = .6 .. 1 (5 values) -> 2/3.
    # (6 + 10/3) / 11 = 28/33.
    assert voc_average_precision(rec, prec, use_07_metric=True) == pytest.approx(28 / 33)


def test_ap_recall_not_reaching_one() -> None:
    rec = np.array([0.25, 0.5])
    prec = np.array([1.0, 1.0])
    # Area: precision 1 up to recall .5, nothing after -> .5.
    assert voc_average_precision(rec, prec) == pytest.approx(0.5)
    # 11 points: t = 0 .. .5 -> 1 (6 values), the rest 0 -> 6/11.
    assert voc_average_precision(rec, prec, use_07_metric=True) == pytest.approx(6 / 11)


def test_ap_11_point_counts_exact_threshold() -> None:
    # Recall exactly 0.3 must count for t = 0.3 (np.arange(0, 1.1, .1)[3] > 0.3 would skip it):
    # t = 0, .1, .2, .3 -> 1 -> 4/11.
    ap = voc_average_precision(np.array([0.3]), np.array([1.0]), use_07_metric=True)
    assert ap == pytest.approx(4 / 11)


def test_ap_empty_curve_is_zero() -> None:
    assert voc_average_precision(np.zeros(0), np.zeros(0)) == 0.0
    assert voc_average_precision(np.zeros(0), np.zeros(0), use_07_metric=True) == 0.0


def test_box_iou_continuous_coordinates() -> None:
    # [0,0,10,10] vs [5,0,15,10]: intersection 50, union 150 (no +1 pixel convention).
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1 / 3, 0.0]])


# ----------------------------------------------------------------------------------------- voc_map


def _gt(boxes, labels, difficult=None) -> dict:
    out = {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "labels": np.array(labels)}
    if difficult is not None:
        out["difficult"] = np.array(difficult, dtype=bool)
    return out


def _det(boxes, scores, labels) -> dict:
    return {
        "boxes": np.array(boxes, dtype=float).reshape(-1, 4),
        "scores": np.array(scores, dtype=float),
        "labels": np.array(labels),
    }


def _hand_case() -> tuple[list[dict], list[dict]]:
    """2 images, classes 0 and 1 with ground truth, class 2 without.

    Image A gt: G1 c0 [0,0,10,10]; G2 c0 [20,20,30,30] difficult; H1 c1 [0,0,10,10].
    Image B gt: G3 c0 [50,50,60,60]; H2 c1 [10,10,20,20] (never detected: missed).
    Detections:
      A d1 c0 [0,0,10,10]      .90  IoU 1 with G1                    -> TP
      A d2 c0 [0,0,10,10]      .80  IoU 1 with G1, already matched   -> FP (duplicate)
      A d3 c0 [20,20,30,30]    .70  IoU 1 with difficult G2          -> ignored
      A d4 c1 [0,0,10,10]      .60  IoU 1 with H1                    -> TP
      A d5 c1 [100,100,110,110].95  IoU 0                            -> FP
      B d6 c0 [50,50,60,65]    .50  IoU 100/150 = .67 with G3        -> TP
      B d7 c0 [55,50,65,60]    .85  IoU 50/150 = .33 with G3         -> FP (low IoU)
      B d8 c2 [0,0,5,5]        .40  class 2 has no gt                -> class excluded
    """
    gts = [
        _gt([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], [0, 0, 1], [False, True, False]),
        _gt([[50, 50, 60, 60], [10, 10, 20, 20]], [0, 1], [False, False]),
    ]
    dets = [
        _det(
            [
                [0, 0, 10, 10],
                [0, 0, 10, 10],
                [20, 20, 30, 30],
                [0, 0, 10, 10],
                [100, 100, 110, 110],
            ],
            [0.9, 0.8, 0.7, 0.6, 0.95],
            [0, 0, 0, 1, 1],
        ),
        _det([[50, 50, 60, 65], [55, 50, 65, 60], [0, 0, 5, 5]], [0.5, 0.85, 0.4], [0, 0, 2]),
    ]
    return dets, gts


def test_voc_map_hand_case_all_points() -> None:
    dets, gts = _hand_case()
    out = voc_map(dets, gts, num_classes=3)
    # Class 0, npos = 2 (G2 is difficult). Score order d1 TP, d7 FP, d2 FP, (d3 ignored), d6 TP:
    #   recall .5 .5 .5 1, precision 1 .5 1/3 .5 -> envelope 1 | .5 .5 .5
    #   AP = .5 * 1 + .5 * .5 = .75
    # Class 1, npos = 2 (H2 missed). Order d5 FP, d4 TP: recall 0 .5, precision 0 .5
    #   AP = .5 * .5 = .25 (nothing beyond recall .5)
    # Class 2: no gt -> NaN, excluded. mAP = (75 + 25) / 2 = 50.
    ap = out["ap_per_class"]
    assert ap[0] == pytest.approx(75.0)
    assert ap[1] == pytest.approx(25.0)
    assert math.isnan(ap[2])
    assert out["map50"] == pytest.approx(50.0)


def test_voc_map_hand_case_11_point() -> None:
    dets, gts = _hand_case()
    out = voc_map(dets, gts, num_classes=3, use_07_metric=True)
    # Class 0: t = 0 .. .5 -> 1 (6 values), t = .6 .. 1 -> .5 (5 values): 8.5 / 11.
    # Class 1: t = 0 .. .5 -> .5 (6 values), rest 0: 3 / 11.
    assert out["ap_per_class"][0] == pytest.approx(100 * 8.5 / 11)
    assert out["ap_per_class"][1] == pytest.approx(100 * 3 / 11)
    assert math.isnan(out["ap_per_class"][2])
    assert out["map50"] == pytest.approx(100 * 11.5 / 22)


def test_voc_map_class_without_gt_is_nan_and_excluded() -> None:
    gts = [_gt([[0, 0, 10, 10]], [0])]
    dets = [_det([[0, 0, 10, 10], [0, 0, 5, 5]], [0.9, 0.8], [0, 1])]
    out = voc_map(dets, gts, num_classes=2)
    assert out["ap_per_class"][0] == pytest.approx(100.0)
    assert math.isnan(out["ap_per_class"][1])
    assert out["map50"] == pytest.approx(100.0)


def test_voc_map_only_difficult_gt_is_nan() -> None:
    gts = [_gt([[0, 0, 10, 10]], [0], [True])]
    dets = [_det([[0, 0, 10, 10]], [0.9], [0])]
    out = voc_map(dets, gts, num_classes=1)
    assert math.isnan(out["ap_per_class"][0])
    assert math.isnan(out["map50"])


def test_voc_map_devkit_rule_no_fallback_to_next_gt() -> None:
    # gt A [0,0,10,10], gt B [0,5,10,15]. d1 = A exactly -> TP on A.
    # d2 [0,2,10,12]: IoU with A = 80/120 = .67, with B = 70/130 = .54. The devkit takes the max
    # (A, already matched) -> FP, although B is free and above .5.
    # recall .5 .5, precision 1 .5 -> AP = .5.
    gts = [_gt([[0, 0, 10, 10], [0, 5, 10, 15]], [0, 0])]
    dets = [_det([[0, 0, 10, 10], [0, 2, 10, 12]], [0.9, 0.8], [0, 0])]
    assert voc_map(dets, gts, num_classes=1)["ap_per_class"][0] == pytest.approx(50.0)


def test_voc_map_difficult_max_iou_wins() -> None:
    # The detection overlaps a difficult gt best (IoU 1) and a normal gt at .67: the devkit
    # takes the difficult one and ignores the detection, so the normal gt stays missed -> AP 0.
    gts = [_gt([[0, 0, 10, 10], [0, 0, 10, 15]], [0, 0], [True, False])]
    dets = [_det([[0, 0, 10, 10]], [0.9], [0])]
    assert voc_map(dets, gts, num_classes=1)["ap_per_class"][0] == 0.0


def test_voc_map_no_detections_and_missing_difficult_key() -> None:
    gts = [{"boxes": np.array([[0, 0, 10, 10]], dtype=float), "labels": np.array([0])}]
    dets = [_det(np.zeros((0, 4)), [], [])]
    out = voc_map(dets, gts, num_classes=1)
    assert out["ap_per_class"] == [0.0]
    assert out["map50"] == 0.0


def test_voc_map_rejects_bad_input() -> None:
    gts = [_gt([[0, 0, 10, 10]], [0])]
    with pytest.raises(ValueError):
        voc_map([], gts, num_classes=1)
    with pytest.raises(ValueError):
        voc_map([_det([[0, 0, 1, 1]], [0.5], [3])], gts, num_classes=1)


# ------------------------------------------------------------------------------- coco_bbox_stats


def _coco_dataset() -> dict:
    """Two images, non-contiguous category ids 1 and 90, medium-sized boxes, iscrowd 0."""
    boxes = [  # (image_id, category_id, [x, y, w, h])
        (1, 1, [10.0, 10.0, 50.0, 40.0]),
        (1, 90, [100.0, 80.0, 60.0, 60.0]),
        (2, 1, [30.0, 20.0, 40.0, 70.0]),
        (2, 90, [150.0, 150.0, 45.0, 35.0]),
    ]
    anns = [
        {
            "id": i + 1,
            "image_id": img,
            "category_id": cat,
            "bbox": bb,
            "area": bb[2] * bb[3],
            "iscrowd": 0,
        }
        for i, (img, cat, bb) in enumerate(boxes)
    ]
    return {
        "images": [{"id": 1, "width": 320, "height": 240}, {"id": 2, "width": 320, "height": 240}],
        "categories": [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}],
        "annotations": anns,
    }


def _coco_gt() -> COCO:
    coco = COCO()
    coco.dataset = _coco_dataset()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _perfect_predictions() -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": list(a["bbox"]),
            "score": 0.9,
        }
        for a in _coco_dataset()["annotations"]
    ]


def test_coco_perfect_predictions() -> None:
    stats = coco_bbox_stats(_coco_gt(), _perfect_predictions())
    assert list(stats) == list(STAT_NAMES)
    assert stats["bbox_ap"] == pytest.approx(100.0)
    assert stats["bbox_ap50"] == pytest.approx(100.0)
    assert stats["bbox_ap75"] == pytest.approx(100.0)
    assert stats["bbox_ar100"] == pytest.approx(100.0)


def test_coco_shifted_box_matches_direct_cocoeval() -> None:
    preds = _perfect_predictions()
    preds[0]["bbox"] = [20.0, 14.0, 50.0, 40.0]  # shifted: IoU about .57
    stats = coco_bbox_stats(_coco_gt(), copy.deepcopy(preds))

    gt = _coco_gt()
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(preds)), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    expected = {name: 100.0 * v for name, v in zip(STAT_NAMES, ev.stats)}
    assert stats == pytest.approx(expected)
    assert 0.0 < stats["bbox_ap"] < 100.0
    assert stats["bbox_ap50"] == pytest.approx(100.0)


def test_coco_empty_predictions_score_as_pycocotools_scores_nothing_found() -> None:
    """0 where there is ground truth to find, -100 (COCOeval's -1) where a stat has none."""
    gt = _coco_gt()
    nothing = COCO()
    nothing.dataset = {**_coco_dataset(), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        nothing.createIndex()
        ev = COCOeval(gt, nothing, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    expected = {name: 100.0 * v for name, v in zip(STAT_NAMES, ev.stats)}
    stats = coco_bbox_stats(_coco_gt(), [])
    assert stats == expected
    assert stats["bbox_ap"] == 0.0 and -100.0 in stats.values()


def test_coco_from_files_and_quiet(tmp_path, capsys) -> None:
    gt_path = tmp_path / "gt.json"
    pred_path = tmp_path / "pred.json"
    gt_path.write_text(json.dumps(_coco_dataset()))
    preds = _perfect_predictions()
    pred_path.write_text(json.dumps(preds))
    stats = coco_bbox_stats(gt_path, str(pred_path))
    assert stats["bbox_ap"] == pytest.approx(100.0)
    assert capsys.readouterr().out == ""
    # The caller's prediction dicts are not mutated by loadRes.
    coco_bbox_stats(_coco_gt(), preds)
    assert set(preds[0]) == {"image_id", "category_id", "bbox", "score"}


def _generated_coco(seed: int) -> tuple[dict, list[dict]]:
    """Ground truth of 60 images (boxes of every COCO area range, some crowd, some images
    empty, category ids 3, 7, 12) and noisy detections with false positives."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "width": 640, "height": 480} for i in range(1, 61)]
    annotations, detections = [], []
    for image in images:
        for _ in range(int(rng.integers(0, 6))):
            w, h = rng.uniform(4, 250, 2)
            x, y = rng.uniform(0, 380), rng.uniform(0, 220)
            category = int(rng.choice([3, 7, 12]))
            box = [float(x), float(y), float(w), float(h)]
            crowd = int(rng.random() < 0.05)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": category,
                    "bbox": box,
                    "area": float(w * h),
                    "iscrowd": crowd,
                }
            )
            for _ in range(3):
                noisy = [box[0] + rng.normal(0, 6), box[1] + rng.normal(0, 6), w * 1.1, h * 0.9]
                detections.append(
                    {
                        "image_id": image["id"],
                        "category_id": category if rng.random() < 0.8 else 7,
                        "bbox": [float(v) for v in noisy],
                        "score": float(rng.random()),
                    }
                )
    categories = [{"id": c, "name": f"c{c}"} for c in (3, 7, 12)]
    return {"images": images, "categories": categories, "annotations": annotations}, detections


@pytest.mark.parametrize("subset", [False, True])
def test_coco_stats_equal_pycocotools_on_a_generated_set(subset: bool) -> None:
    dataset, detections = _generated_coco(seed=5)
    image_ids = list(range(1, 61, 2)) if subset else None
    gt = COCO()
    gt.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(detections)), iouType="bbox")
        if subset:
            ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    expected = {name: float(v) * 100.0 for name, v in zip(STAT_NAMES, ev.stats)}
    assert coco_bbox_stats(gt, detections, image_ids) == expected  # exactly, every stat
    assert 0.0 < expected["bbox_ap"] < 100.0
