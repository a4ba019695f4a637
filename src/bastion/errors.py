"""STUB"""
from __future__ import annotations
from bastion.sections import LayerSettings
class ErrorSettings(LayerSettings):
    pass
