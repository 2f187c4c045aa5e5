"""In-tree victims; importing this package registers them."""

from victims import relu_mlp  # noqa: F401, I001
from victims import sdn_mobilenet, sdn_resnet56, sdn_tiny, sdn_vgg16  # noqa: F401
