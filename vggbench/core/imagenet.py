"""The normalisation torchvision's ImageNet weights expect: the default mean/std of weights and datasets alike."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
