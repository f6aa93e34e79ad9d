"""featviz server: activation maximization on the ImageNet VGG16 conv base, served over gRPC."""
