"""textweaver: train a small language model on any text you own, then generate text in its style.

Python API::

    from textweaver import train, load
    train(["novel.txt"], "runs/novel", max_time="3m")
    model = load("runs/novel")
    print(model.generate(prompt="Once upon", length=300, temperature=0.8))
"""

__version__ = "0.1.0"

from textweaver.app.api import TextModel, load, train
from textweaver.errors import TextweaverError

__all__ = ["TextModel", "TextweaverError", "__version__", "load", "train"]
