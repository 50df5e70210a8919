"""cvgl: unsupervised cross-view geo-localization."""
__version__ = "0.1.0"
