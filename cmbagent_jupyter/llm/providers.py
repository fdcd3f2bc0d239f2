"""Which model a run uses: providers from the environment and `$CMBAGENT_HOME/models.yaml`.

    # $CMBAGENT_HOME/models.yaml
    default: openai/gpt-4.1-mini          # what `--model` defaults to
    scenario: cmb_power_spectrum          # the scripted model's default scenario
    providers:
      openai: {kind: openai}               # key from OPENAI_API_KEY
      local:                               # any OpenAI-compatible server
        kind: openai_compatible
        base_url: http://127.0.0.1:8000/v1
        api_key: none
    prices:                                # USD per million tokens, for models genai-prices lacks
      local/llama3.1: {input_per_mtok: 0, output_per_mtok: 0}

A model is named `provider/model` (`anthropic/claude-sonnet-4-5`, `local/llama3.1`) or
just `model` when its provider is clear from the name (gpt-*, o1-*, claude-*, gemini-*).
`scripted` or `scripted:SCENARIO` picks the offline scripted model. With no model
asked for and no provider key configured, the scripted model is chosen and announced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cmbagent_jupyter.core.home import home_path
from cmbagent_jupyter.llm.scripted import ScriptedModelConfig
from cmbagent_jupyter.llm.scenario import DEFAULT_SCENARIO
from cmbagent_jupyter.core import InvalidInput

MODELS_FILE = "models.yaml"


class ProviderKind(str, Enum):
    openai = "openai"
    anthropic = "anthropic"
    gemini = "gemini"
    openai_compatible = "openai_compatible"


KEY_ENV = {
    ProviderKind.openai: ("OPENAI_API_KEY",),
    ProviderKind.anthropic: ("ANTHROPIC_API_KEY",),
    ProviderKind.gemini: ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    ProviderKind.openai_compatible: (),
}
DEFAULT_MODELS = {
    ProviderKind.openai: "gpt-4.1-mini",
    ProviderKind.anthropic: "claude-sonnet-4-5",
    ProviderKind.gemini: "gemini-2.5-flash",
}
NAME_PREFIXES = (("gpt-", "openai"), ("o1", "openai"), ("o3", "openai"), ("o4", "openai"), ("chatgpt", "openai"),
                 ("claude", "anthropic"), ("gemini", "gemini"))


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSettings(_Cfg):
    kind: ProviderKind
    api_key: str | None = None
    api_key_env: str | None = None
    base_url: str | None = None
    default_model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="extra fields for the AG2 config")

    def key(self) -> str | None:
        if self.api_key:
            return self.api_key
        for env in ([self.api_key_env] if self.api_key_env else []) + list(KEY_ENV[self.kind]):
            if os.environ.get(env):
                return os.environ[env]
        return None

    def key_hint(self) -> str:
        names = ([self.api_key_env] if self.api_key_env else []) + list(KEY_ENV[self.kind])
        return " or ".join(names) if names else "api_key in models.yaml"


class Price(_Cfg):
    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)


class ModelSettings(_Cfg):
    default: str | None = None
    scenario: str | None = None
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(default_factory=dict)

    def provider(self, name: str) -> ProviderSettings | None:
        if name in self.providers:
            return self.providers[name]
        try:
            kind = ProviderKind(name)
        except ValueError:
            return None
        if kind == ProviderKind.openai_compatible:
            return None
        base = os.environ.get("OPENAI_BASE_URL") if kind == ProviderKind.openai else None
        return ProviderSettings(kind=kind, base_url=base)


def load_settings(home: str | os.PathLike | None = None) -> ModelSettings:
    path = home_path(home) / MODELS_FILE
    if not path.exists():
        return ModelSettings()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path} is not valid YAML: {exc}") from None
    try:
        return ModelSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"{path}: {'.'.join(str(x) for x in first['loc'])}: {first['msg']}") from None


@dataclass
class ModelChoice:
    """A resolved model: the AG2 config to give agents and how to name and price it."""

    config: Any
    ref: str
    provider: str
    model: str
    scripted: bool = False
    scenario: str | None = None
    price: Price | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def announcement(self) -> str:
        if self.scripted:
            return f"using the scripted offline model (scenario {self.scenario})"
        return f"using model {self.ref}"


def resolve_model(ref: str | None = None, *, scenario: str | None = None,
                  home: str | os.PathLike | None = None) -> ModelChoice:
    settings = load_settings(home)
    ref = (ref or "").strip() or None
    if ref is None and scenario:
        ref = "scripted"
    ref = ref or os.environ.get("CMBAGENT_MODEL") or settings.default
    if ref is None:
        ref = _first_configured(settings)
    if ref is None or ref == "scripted" or ref.startswith(("scripted:", "scripted/")):
        named = ref.split(":", 1)[1] if ref and ref.startswith("scripted:") else \
            ref.split("/", 1)[1] if ref and ref.startswith("scripted/") else None
        name = scenario or named or os.environ.get("CMBAGENT_SCENARIO") or settings.scenario or DEFAULT_SCENARIO
        return scripted_choice(name, settings)
    provider_name, model = _split(ref, settings)
    prov = settings.provider(provider_name)
    if prov is None:
        known = sorted({*settings.providers, "openai", "anthropic", "gemini"})
        raise InvalidInput(f"unknown model provider {provider_name!r} in {ref!r}; known providers: "
                           f"{', '.join(known)} (add others to {MODELS_FILE}; a model name holding '/' goes after its "
                           f"provider, e.g. local/org/model)")
    model = model or prov.default_model or DEFAULT_MODELS.get(prov.kind)
    if not model:
        raise InvalidInput(f"provider {provider_name!r} has no default_model; name one: --model {provider_name}/MODEL")
    key = prov.key()
    if key is None and prov.kind != ProviderKind.openai_compatible:
        raise InvalidInput(f"model {provider_name}/{model} needs an API key: set {prov.key_hint()} "
                           f"(or use the offline model with --model scripted)")
    config = build_config(prov, model, key)
    full = f"{provider_name}/{model}"
    price = settings.prices.get(full) or settings.prices.get(model)
    return ModelChoice(config=config, ref=full, provider=provider_name, model=model, price=price)


def scripted_choice(scenario_ref: str, settings: ModelSettings | None = None) -> ModelChoice:

    config = ScriptedModelConfig(scenario_ref)
    sc = config.scenario
    price = Price(**sc.price.model_dump()) if sc.price is not None else None
    if price is None and settings is not None:
        price = settings.prices.get(sc.model_name)
    return ModelChoice(config=config, ref=f"scripted:{scenario_ref}", provider="scripted", model=sc.model_name,
                       scripted=True, scenario=sc.name, price=price)


def _first_configured(settings: ModelSettings) -> str | None:
    for name, prov in settings.providers.items():
        if prov.key() or prov.kind == ProviderKind.openai_compatible:
            return f"{name}/{prov.default_model}" if prov.default_model else name
    for kind in (ProviderKind.openai, ProviderKind.anthropic, ProviderKind.gemini):
        if any(os.environ.get(e) for e in KEY_ENV[kind]):
            return f"{kind.value}/{DEFAULT_MODELS[kind]}"
    return None


def _split(ref: str, settings: ModelSettings) -> tuple[str, str | None]:
    if "/" in ref:
        head, tail = ref.split("/", 1)
        return head, tail or None
    if ref in settings.providers or ref in ("openai", "anthropic", "gemini"):
        return ref, None
    lowered = ref.lower()
    for prefix, prov in NAME_PREFIXES:
        if lowered.startswith(prefix):
            return prov, ref
    if settings.default and "/" in settings.default:
        return settings.default.split("/", 1)[0], ref
    raise InvalidInput(f"cannot tell the provider of model {ref!r}: write it as PROVIDER/MODEL, e.g. openai/{ref}")


def build_config(prov: ProviderSettings, model: str, key: str | None) -> Any:
    """The AG2 config object for a provider (`ag2.config`), or a clear error if its extra is missing."""
    try:
        if prov.kind in (ProviderKind.openai, ProviderKind.openai_compatible):
            from ag2.config import OpenAIConfig

            return OpenAIConfig(model=model, api_key=key or "not-needed", base_url=prov.base_url, **prov.options)
        if prov.kind == ProviderKind.anthropic:
            from ag2.config import AnthropicConfig

            return AnthropicConfig(model=model, api_key=key, base_url=prov.base_url, **prov.options)
        from ag2.config import GeminiConfig

        return GeminiConfig(model=model, api_key=key, **prov.options)
    except ImportError as exc:
        raise InvalidInput(f"{prov.kind.value} models need AG2's extra: pip install \"ag2[{prov.kind.value}]\" "
                           f"({exc})") from None
