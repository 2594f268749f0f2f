"""Facade kept from the prototype: ``from poh_storage.types import Tx``."""
from .tx import Tx

__all__ = ("Tx",)
