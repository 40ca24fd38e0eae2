"""`ray-distill view`: a read-only local web app over a run directory.

Pages are rendered on the server from what is on disk at each request, so
they follow a run that is still going. `run` finds what a run directory
holds, `query` reads record stores a page at a time, `trajectory`,
`training` and `markdown` turn records into what a page shows, and `app`
serves the pages (aiohttp + Jinja2).
"""
