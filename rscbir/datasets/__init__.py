"""Labelled data sets in the layouts the field ships them in, read in one place.

* :mod:`rscbir.datasets.oscd` - change between two dates: ``CITY/imgs_1/``, ``imgs_2/``, ``cm/`` (OSCD)
* :mod:`rscbir.datasets.pairs` - change in image pairs: ``A/``, ``B/``, ``label/`` (LEVIR-CD, DSIFN)
* :mod:`rscbir.datasets.scene_sets` - retrieval: one folder of images per class (RSSCN7, UC Merced)
"""
