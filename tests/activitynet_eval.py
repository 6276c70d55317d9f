"""ActivityNet's Evaluation/eval_detection.py, transcribed to Python 3 and plain numpy (no pandas).

The per-detection loops of ``compute_average_precision_detection``,
``segment_iou`` and ``interpolated_prec_rec`` are kept line for line, so this
is the yardstick pipeline/evaluate.py is checked against (tests) and timed
against (bench/evaluate.py). One addition, off by default: ``ambiguous``
applies THUMOS14's rule (an unmatched detection overlapping an Ambiguous
segment of its video is not counted). Ties in score are broken by input order
(the original's argsort()[::-1] leaves them to the sort implementation).
"""
import numpy as np


def segment_iou(target_segment, candidate_segments):
    tt1 = np.maximum(target_segment[0], candidate_segments[:, 0])
    tt2 = np.minimum(target_segment[1], candidate_segments[:, 1])
    segments_intersection = (tt2 - tt1).clip(0)
    segments_union = ((candidate_segments[:, 1] - candidate_segments[:, 0]) + (target_segment[1] - target_segment[0])
                      - segments_intersection)
    return segments_intersection.astype(float) / segments_union


def interpolated_prec_rec(prec, rec):
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def compute_average_precision_detection(ground_truth, prediction, tiou_thresholds, ambiguous=None):
    """ground_truth: list of (video, start, end); prediction: list of (video, start, end, score);
    ambiguous: list of (video, start, end). Returns AP per threshold."""
    ap = np.zeros(len(tiou_thresholds))
    if len(prediction) == 0:
        return ap
    npos = float(len(ground_truth))
    lock_gt = np.ones((len(tiou_thresholds), len(ground_truth))) * -1
    sort_idx = sorted(range(len(prediction)), key=lambda i: -prediction[i][3])
    prediction = [prediction[i] for i in sort_idx]
    tp = np.zeros((len(tiou_thresholds), len(prediction)))
    fp = np.zeros((len(tiou_thresholds), len(prediction)))
    ground_truth_gbvn = {}
    for index, (video, start, end) in enumerate(ground_truth):
        ground_truth_gbvn.setdefault(video, []).append((index, start, end))
    for idx, this_pred in enumerate(prediction):
        if this_pred[0] not in ground_truth_gbvn:
            fp[:, idx] = 1
            continue
        this_gt = ground_truth_gbvn[this_pred[0]]
        tiou_arr = segment_iou(np.array(this_pred[1:3]), np.array([g[1:] for g in this_gt]))
        tiou_sorted_idx = np.argsort(-tiou_arr, kind="stable")
        for tidx, tiou_thr in enumerate(tiou_thresholds):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < tiou_thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, this_gt[jdx][0]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, this_gt[jdx][0]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    if ambiguous:
        for idx, (video, start, end, _) in enumerate(prediction):
            if any(v == video and min(end, e) - max(start, s) > 0 for v, s, e in ambiguous):
                fp[:, idx] = 0
    tp_cumsum = np.cumsum(tp, axis=1).astype(float)
    fp_cumsum = np.cumsum(fp, axis=1).astype(float)
    recall_cumsum = tp_cumsum / npos
    with np.errstate(invalid="ignore"):
        precision_cumsum = np.nan_to_num(tp_cumsum / (tp_cumsum + fp_cumsum))
    for tidx in range(len(tiou_thresholds)):
        ap[tidx] = interpolated_prec_rec(precision_cumsum[tidx, :], recall_cumsum[tidx, :])
    return ap
