"""The declarative base every Bastion table derives from."""

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Every Bastion table derives from this."""
