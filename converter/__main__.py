"""`python -m converter`: convert a Keras LM to LiteRT (`converter.cli.convert`)."""

from converter.cli import convert

if __name__ == "__main__":
    convert.run()
