"""orderstream producer: the wire contract and a light client for publishing order requests."""

from .client import OrderClient, Submitted
from .components import MarketData, OrderComponent, Signal
from .contract import (
    Action,
    Algo,
    AlgoStrategy,
    OrderState,
    OrderStatus,
    OrderType,
    ReasonCode,
    Request,
    Result,
    ResultStatus,
    Side,
    TimeInForce,
)
from .keys import Keys
from .partitions import Deployment, load_deployment

__all__ = [
    "Action",
    "Algo",
    "AlgoStrategy",
    "Deployment",
    "Keys",
    "MarketData",
    "OrderClient",
    "OrderComponent",
    "OrderState",
    "OrderStatus",
    "OrderType",
    "ReasonCode",
    "Request",
    "Result",
    "ResultStatus",
    "Side",
    "Signal",
    "Submitted",
    "TimeInForce",
    "load_deployment",
]
