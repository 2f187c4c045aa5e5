"""In-tree attacks; importing this package registers them."""
