"""The package version: the ground floor every layer may import (never the package top)."""

__version__ = "0.1.0"
