from phenaki_cli.transformer.maskgit import MaskGIT, WindowContext

__all__ = ["MaskGIT", "WindowContext"]
