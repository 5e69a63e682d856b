"""plantray: large-scale plant identification in photographs on Ray.

Reproduces the pipeline of Heredia, "Large-scale plant classification with deep neural networks"
(CF'17) as a distributed batch system: Ray Data streams images from object storage through GPU (or
CPU) actors running a ResNet50, to train with Ray Train and to classify millions of occurrence images
into Parquet for biodiversity databases such as GBIF.
"""

__version__ = "0.1.0"
