"""Detection metrics: PASCAL VOC mAP (numpy only) and a thin pycocotools COCOeval wrapper."""
