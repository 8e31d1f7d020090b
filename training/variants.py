"""GENet variants and their (extra, mlp) flags; free of MindSpore so configs load fast."""

# variant -> (extra, mlp); "custom" takes both flags from the configuration.
VARIANTS = {"theta_minus": (False, False), "theta": (True, False), "theta_plus": (True, True)}
CUSTOM_VARIANT = "custom"


def variant_flags(variant):
    """Return the (extra, mlp) flags of a named variant."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def resolve_flags(variant, extra=None, mlp=None):
    """Return (extra, mlp) for `variant`, checking explicit flags against a named variant.

    `custom` needs both flags; a named variant fills missing flags and rejects conflicting ones.
    """
    if variant == CUSTOM_VARIANT:
        if extra is None or mlp is None:
            raise ValueError("variant 'custom' needs both model.extra and model.mlp")
        return bool(extra), bool(mlp)
    flags = variant_flags(variant)
    for name, given, implied in zip(("extra", "mlp"), (extra, mlp), flags):
        if given is not None and given != implied:
            raise ValueError(f"model.{name}={given} conflicts with variant {variant!r} "
                             f"({name}={implied}); use variant 'custom' for other combinations")
    return flags
