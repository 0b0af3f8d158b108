"""Model definitions the project adds to torchvision's."""
