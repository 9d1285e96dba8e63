"""corekit's built-in plugins (installed as the package ``corekit_plugins``).

Each sub-package registers components through ``corekit_register_components``, exactly as
a third-party package would. Registration modules import no torch: each ``build`` is
named as a ``"module:function"`` string and imported when first used.
"""
