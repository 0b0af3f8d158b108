"""Task metrics: COCO box AP, VOC mAP, segmentation mIoU."""
