"""Natural exemplars: the crops of a photo collection that excite (and inhibit) each channel most.

`collection` lists the photos (those bundled with scikit-image, or a user's directory), `crops`
says which crops are cut from each photo and how, `scan` runs them through the network once per
layer, every channel at once, and keeps each channel's top and bottom crops on disk. Free of gRPC.
"""

from .collection import Collection, EmptyCollection, Source, bundled_photos, directory
from .crops import CROP_SCHEME, Crop, crop_boxes, cut
from .scan import MAX_EXEMPLARS, Exemplar, LayerExemplars, Scanner, ScanProgress

__all__ = [
    "CROP_SCHEME",
    "MAX_EXEMPLARS",
    "Collection",
    "Crop",
    "EmptyCollection",
    "Exemplar",
    "LayerExemplars",
    "ScanProgress",
    "Scanner",
    "Source",
    "bundled_photos",
    "crop_boxes",
    "cut",
    "directory",
]
