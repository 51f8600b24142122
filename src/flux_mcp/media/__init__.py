"""Bytes to files: decoding and previews, the image and video keepers, the uploads of local edit inputs."""
