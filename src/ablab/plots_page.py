"""`dvc plots show` without the network: DVC's page loads Vega, Vega-Lite and Vega-Embed from a
CDN, so offline it draws nothing. This writes an HTML template (`.dvc/config`:
`plots.html_template`) that carries the three libraries, bundled by vl-convert, in the page.

    python -m ablab.plots_page .dvc/plots.html
"""

from __future__ import annotations

import sys
from pathlib import Path

# the major version of DVC's and ablab's plot templates ($schema vega-lite/v5)
VEGA_LITE = "5.21"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <script>/* Vega, Vega-Lite and Vega-Embed (vl-convert's bundle): no CDN */
BUNDLE</script>
    <style>table { border-spacing: 15px; }</style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page() -> str:
    """The template's text: DVC fills {plot_divs} and {refresh_tag}; its {scripts} (the CDN
    tags) is left out on purpose."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE).replace("</script", "<\\/script")
    return PAGE.replace("BUNDLE", bundle)


def write(path: Path) -> None:
    """Write the template through a temporary file, so no half page is ever read."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page(), encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else ".dvc/plots.html"))
