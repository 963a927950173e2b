"""The rules of the int8 lowering table, grouped by the ops they lower."""

__all__: list[str] = []
