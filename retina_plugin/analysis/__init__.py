"""
Two analyses, one subpackage each:

- `anchors`: anchor coverage (tools/analyze_anchors.py): do a config's anchors cover a
  dataset's boxes, as training labels anchors, and which anchor setting covers them better;
- `detections`: error analysis of a detector's COCO results (tools/analyze_results.py):
  per-class AP and thresholds, PR curves, confusion matrix, TIDE errors, worst images.

Nothing is imported here, so that using one does not load the other.
"""
