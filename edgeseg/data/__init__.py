"""Datasets (image/mask folders, NIfTI volumes) and transforms; the synthetic phantoms are in
``edgeseg.common.phantoms`` (the device side uses them too).

Importing ``edgeseg.data`` never imports torch: the readers give numpy arrays, and the training loop
(``edgeseg.train``) turns them into tensors itself.
"""
