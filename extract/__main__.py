"""``python -m extract probe ...``: the layer probe without the pipelines CLI."""

import sys

from extract.probe import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "probe":
        sys.exit(
            "usage: python -m extract probe --checkpoint C --log L --train-days D1,D2 --test-days D3 "
            "--scenario S --out DIR [--config configs/extract.yaml] [--no-record]"
        )
    main(sys.argv[2:])
