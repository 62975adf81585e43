"""``rscbir serve``: a local web map over one index folder.

:mod:`rscbir.web.api` is the JSON API and the map tiles (a Flask blueprint, usable
on its own by scripts); :mod:`rscbir.web.page` is the Dash page that drives it.
Every script, style and tile is served by the app from installed packages.
"""
