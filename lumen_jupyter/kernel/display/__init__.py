"""What the kernel shows: views that read well in a notebook and in a terminal.

:mod:`.render` holds the small output objects (text for terminals, HTML for
notebooks, every server or model string escaped); :mod:`.views` and
:mod:`.usage_views` turn the REST API's JSON into them; :mod:`.safe_markdown`
makes a model's answer inert before it is shown; :mod:`.reveal` shows a new
secret once, where no saved notebook keeps it.  Nothing here talks to the gateway.
"""
