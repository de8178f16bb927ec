from phenaki_cli.tokenizer.cvivit import CViViT, TokenizerOutput
from phenaki_cli.tokenizer.quantizer import FactorizedVQ

__all__ = ["CViViT", "TokenizerOutput", "FactorizedVQ"]
