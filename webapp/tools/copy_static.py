"""Copy vendored JavaScript from installed Python packages into static/vendor/.

The site must work offline (no CDN): plotly.js ships inside the plotly package, so
`make setup` copies it from there instead of committing a 4 MB file.
"""

import shutil
from importlib import resources
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[2] / "static" / "vendor"


def main() -> None:
    VENDOR.mkdir(parents=True, exist_ok=True)
    source = resources.files("plotly") / "package_data" / "plotly.min.js"
    with resources.as_file(source) as path:
        shutil.copyfile(path, VENDOR / "plotly.min.js")
    print(f"copied plotly.min.js to {VENDOR}")


if __name__ == "__main__":
    main()
