"""The lecture's sections of the gallery, one module each; the mixture sections' parts are run
per mixture by :mod:`pushforward.gallery.chain`."""
