"""How a model builds its parts (network, prior, posterior) from their configs, without Hydra.

A part's config is a mapping with ``_target_`` (``module.ClassName``) and the part's own settings;
the model adds what it knows (the data's image shape, the latent size) as ``context``. A setting the
class does not take, a class of the wrong kind and the part's own ``SettingError`` become one line
under the part's config path (``model.prior.components=0 must be ...``); any other error in a part's
code keeps its traceback.
"""

import importlib
from collections.abc import Mapping, Sequence

from vae_lightning.errors import SettingError, accepted_settings


def plain(value):
    """Plain Python containers all the way down (OmegaConf's DictConfig / ListConfig and tuples
    included), so a checkpoint holding them loads with ``torch.load(weights_only=True)``."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def load_class(target: str, where: str, base: type, noun: str | None = None) -> type:
    """The class ``module.ClassName`` names; SettingError when it cannot be imported
    or is not a ``base``."""
    module_name, _, name = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name) if module_name else None
    except ModuleNotFoundError as e:
        if e.name is None or not module_name.startswith(e.name):
            # the module exists but imports something missing: its own bug, with its traceback
            raise
        cls = None
    except AttributeError:
        cls = None
    if cls is None:
        raise SettingError(
            f"{where}._target_",
            target,
            "cannot be loaded (no such module or class): give module.ClassName",
        )
    if not (isinstance(cls, type) and issubclass(cls, base)):
        package = base.__module__.removesuffix(".base")
        raise SettingError(
            f"{where}._target_",
            target,
            f"is not a {noun or base.__name__}: it must subclass {package}.{base.__name__}",
        )
    return cls


def build(config, where: str, base: type, noun: str | None = None, **context):
    """``base`` subclass named by ``config['_target_']``,
    built with the config's settings and ``context``."""
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise SettingError(
            where, plain(config), f"must be a config with a _target_ (a {base.__name__} class)"
        )
    settings = {k: plain(v) for k, v in config.items() if not str(k).startswith("_")}
    cls = load_class(config["_target_"], where, base, noun)
    accepted = accepted_settings(cls)
    if accepted is not None:
        for key in settings:
            if key not in accepted:
                raise SettingError(
                    f"{where}.{key}",
                    settings[key],
                    f"is not a setting of {cls.__name__}: drop it with ~{{key}}, or fix its name",
                    plain=True,
                )
    try:
        return cls(**settings, **context)
    except SettingError as e:
        raise e.under(where) from None
