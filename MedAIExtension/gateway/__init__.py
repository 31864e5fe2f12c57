"""The PACS gateway: stable studies in, AI results (SEG, SR, Parametric Map) and a triage priority back out.

>>> from MedAIExtension.gateway import Gateway, load_config  # doctest: +SKIP
>>> Gateway(load_config("gateway.yaml")).run()               # doctest: +SKIP
"""

from MedAIExtension.gateway.config import GatewayConfig, Pipeline, Rule, load_config, parse_config
from MedAIExtension.gateway.journal import Job, JobState, Journal
from MedAIExtension.gateway.service import Gateway
from MedAIExtension.interop.triage import Triage

__all__ = [
    "Gateway",
    "GatewayConfig",
    "Job",
    "JobState",
    "Journal",
    "Pipeline",
    "Rule",
    "Triage",
    "load_config",
    "parse_config",
]
