"""Prices, discounts and taxes for the shop."""

TAX_RATE = 0.2


def apply_discount(price, percent):
    """Return `price` reduced by `percent` percent."""
    if not 0 <= percent <= 100:
        raise ValueError("percent must be between 0 and 100")
    return price * (100 - percent) / 100


def with_tax(price, rate=TAX_RATE):
    return round(price * (1 + rate), 2)
