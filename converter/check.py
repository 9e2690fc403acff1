"""`python -m converter.check MODEL.tflite`: the compatibility preflight (`converter.cli.check`)."""

from converter.cli import check

if __name__ == "__main__":
    check.run()
