"""PASCAL VOC detection mAP, following the VOC devkit protocol, in numpy only.

Conventions (differences from the official devkit are deliberate and listed here):

* Boxes are ``xyxy`` in continuous coordinates: area = (x2 - x1) * (y2 - y1), with no ``+1``
  pixel-inclusive term (torchvision / COCO style). The devkit adds ``+1``; on small boxes this
  changes IoU slightly.
* Matching follows the devkit rule exactly: each detection (classes handled independently, all
  images pooled, descending score) is compared with *all* ground-truth boxes of its class in its
  image, difficult and already-matched ones included, and the one with the highest IoU is taken.
  If that IoU >= threshold: a difficult gt makes the detection ignored (neither TP nor FP), an
  unmatched gt makes it a TP (and marks the gt matched), an already-matched gt makes it a FP
  (duplicate). Below the threshold it is a FP. A match needs IoU >= threshold (the devkit
  uses a strict >; this only matters for an IoU of exactly the threshold). The detection does
  *not* fall back to the next-best unmatched gt.
* Score ties are broken stably (input order, images in list order); the devkit's unstable
  ``argsort`` leaves them unspecified.
* Classes with no non-difficult ground truth (``npos == 0``) have an undefined AP: they are
  reported as NaN in ``ap_per_class`` and excluded from the mean (the devkit would divide by 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["box_iou", "voc_average_precision", "voc_map"]


def voc_average_precision(
    recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False
) -> float:
    """Average precision of one PR curve (points in detection order, recall non-decreasing).

    Default (VOC2010+): exact area under the interpolated curve, where precision at recall r is
    the maximum precision at any recall >= r. ``use_07_metric``: VOC2007 11-point interpolation,
    mean over t in {0, 0.1, ..., 1} of the maximum precision at recall >= t (0 if none).
    Returns a fraction in [0, 1].
    """
    rec = np.asarray(recall, dtype=np.float64).ravel()
    prec = np.asarray(precision, dtype=np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall {rec.shape} and precision {prec.shape} differ in shape")
    if use_07_metric:
        return _eleven_point_ap(rec, prec)
    return _all_point_ap(rec, prec)


def _eleven_point_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    # i / 10 rather than the devkit's np.arange(0, 1.1, 0.1): 0.1 * 3 > 0.3 in floating point,
    # which would wrongly skip a recall of exactly 0.3.
    total = 0.0
    for i in range(11):
        above = prec[rec >= i / 10]
        total += float(above.max()) if above.size else 0.0
    return total / 11.0


def _all_point_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    # Precision envelope: make it monotonically non-increasing from the right.
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``xyxy`` boxes, (N, 4) x (M, 4) -> (N, M), continuous coordinates."""
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    area1 = _box_area(b1)
    area2 = _box_area(b2)
    lt = np.maximum(b1[:, None, :2], b2[None, :, :2])
    rb = np.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _box_area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0.0, None
    )


def _as_gt(gt: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(gt["boxes"], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(gt["labels"], dtype=np.int64).reshape(-1)
    difficult = gt.get("difficult")
    if difficult is None:
        difficult = np.zeros(len(labels), dtype=bool)
    difficult = np.asarray(difficult, dtype=bool).reshape(-1)
    if not len(boxes) == len(labels) == len(difficult):
        raise ValueError("ground truth boxes, labels and difficult differ in length")
    return boxes, labels, difficult


def _as_det(det: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(det["scores"], dtype=np.float64).reshape(-1)
    labels = np.asarray(det["labels"], dtype=np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError("detection boxes, scores and labels differ in length")
    return boxes, scores, labels


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{what} labels must lie in [0, {num_classes}), got {labels}")


def _class_ap(
    dets: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    gts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    cls: int,
    iou_threshold: float,
    use_07_metric: bool,
) -> float:
    """AP (fraction) of one class, NaN when it has no non-difficult ground truth."""
    gt_boxes = [b[lab == cls] for b, lab, _ in gts]
    gt_difficult = [d[lab == cls] for _, lab, d in gts]
    npos = int(sum(int((~d).sum()) for d in gt_difficult))
    if npos == 0:
        return float("nan")

    det_img = np.concatenate(
        [np.full(int((lab == cls).sum()), i) for i, (_, _, lab) in enumerate(dets)]
        or [np.zeros(0, dtype=np.int64)]
    ).astype(np.int64)
    det_boxes = np.concatenate([b[lab == cls] for b, _, lab in dets] or [np.zeros((0, 4))])
    det_scores = np.concatenate([s[lab == cls] for _, s, lab in dets] or [np.zeros(0)])
    order = np.argsort(-det_scores, kind="stable")

    matched = [np.zeros(len(b), dtype=bool) for b in gt_boxes]
    tp: list[float] = []
    fp: list[float] = []
    for k in order:
        img = int(det_img[k])
        outcome = _match(
            det_boxes[k], gt_boxes[img], gt_difficult[img], matched[img], iou_threshold
        )
        if outcome is None:  # matched a difficult gt: ignored
            continue
        tp.append(float(outcome))
        fp.append(float(not outcome))

    if not tp:
        return 0.0
    ctp = np.cumsum(tp)
    cfp = np.cumsum(fp)
    return voc_average_precision(ctp / npos, ctp / (ctp + cfp), use_07_metric)


def _match(
    box: np.ndarray,
    gt_boxes: np.ndarray,
    difficult: np.ndarray,
    matched: np.ndarray,
    iou_threshold: float,
) -> bool | None:
    """Devkit rule: True = TP, False = FP, None = ignored. Updates ``matched`` in place."""
    if len(gt_boxes) == 0:
        return False
    ious = box_iou(box[None, :], gt_boxes)[0]
    j = int(np.argmax(ious))
    if ious[j] < iou_threshold:
        return False
    if difficult[j]:
        return None
    if matched[j]:
        return False
    matched[j] = True
    return True


def voc_map(
    detections: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
) -> dict[str, Any]:
    """VOC mAP over ``num_classes`` classes (labels 0 .. num_classes - 1).

    ``detections[i]`` (``boxes`` (K, 4) xyxy, ``scores`` (K,), ``labels`` (K,)) and
    ``ground_truths[i]`` (``boxes`` (N, 4) xyxy, ``labels`` (N,), optional ``difficult`` (N,),
    default all False) describe image i. See the module docstring for the matching rule.

    Returns ``{"map50": mean AP in percent, "ap_per_class": [AP in percent per class]}``; classes
    without non-difficult ground truth are NaN in ``ap_per_class`` and left out of the mean
    (``map50`` is NaN if no class has any). A class with ground truth but no detections has AP 0.
    The key is ``map50`` whatever ``iou_threshold`` is.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"{len(detections)} detection entries for {len(ground_truths)} ground-truth images"
        )
    gts = [_as_gt(g) for g in ground_truths]
    dets = [_as_det(d) for d in detections]
    for _, lab, _ in gts:
        _check_labels(lab, num_classes, "ground-truth")
    for _, _, lab in dets:
        _check_labels(lab, num_classes, "detection")

    aps = [
        100.0 * _class_ap(dets, gts, c, iou_threshold, use_07_metric) for c in range(num_classes)
    ]
    valid = [a for a in aps if not np.isnan(a)]
    map50 = float(np.mean(valid)) if valid else float("nan")
    return {"map50": map50, "ap_per_class": aps}
