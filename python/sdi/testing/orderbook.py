"""A price-time-priority matching engine in plain Python over sortedcontainers.

>>> book = PyBook()
>>> book.process(PLACE, 1, SELL, 101, 5, GTC)
>>> book.process(PLACE, 2, BUY, 102, 3, GTC)
>>> book.traded_qty, book.depth(SELL)
(3, [(101, 2)])


The baseline a Python user would write: ``SortedDict`` price -> ``deque`` of
``[order_id, qty]`` per side, and a dict from order id to ``(side, price)``.
It follows the same rules as sdi's engine for what the benchmark mix uses
(GTC and IOC limit orders, cancel, amend: a smaller quantity at the same
price keeps priority, anything else re-queues and may trade), without funds.
"""

from __future__ import annotations

from collections import deque

from sortedcontainers import SortedDict  # type: ignore[import-untyped]

__all__ = ["AMEND", "BUY", "CANCEL", "GTC", "PLACE", "SELL", "PyBook"]

PLACE, CANCEL, AMEND = 1, 2, 3
BUY, SELL = 0, 1
GTC = 0


class PyBook:
    """The book; ``process`` takes one command's fields at a time."""

    def __init__(self) -> None:
        self.bids: SortedDict[int, deque[list[int]]] = SortedDict()
        self.asks: SortedDict[int, deque[list[int]]] = SortedDict()
        self.orders: dict[int, tuple[int, int]] = {}
        self.traded_qty = 0
        self.trades = 0

    def _match(self, side: int, price: int, qty: int) -> int:
        book = self.asks if side == BUY else self.bids
        while qty and book:
            best = book.peekitem(0 if side == BUY else -1)[0]
            if (side == BUY and best > price) or (side == SELL and best < price):
                break
            queue = book[best]
            while qty and queue:
                maker = queue[0]
                fill = min(qty, maker[1])
                maker[1] -= fill
                qty -= fill
                self.traded_qty += fill
                self.trades += 1
                if maker[1] == 0:
                    queue.popleft()
                    del self.orders[maker[0]]
            if not queue:
                del book[best]
        return qty

    def _rest(self, order_id: int, side: int, price: int, qty: int) -> None:
        book = self.bids if side == BUY else self.asks
        queue = book.get(price)
        if queue is None:
            queue = deque()
            book[price] = queue
        queue.append([order_id, qty])
        self.orders[order_id] = (side, price)

    def _remove(self, order_id: int) -> tuple[int, int, int]:
        side, price = self.orders.pop(order_id)
        book = self.bids if side == BUY else self.asks
        queue = book[price]
        qty = 0
        for index, entry in enumerate(queue):
            if entry[0] == order_id:
                qty = entry[1]
                del queue[index]
                break
        if not queue:
            del book[price]
        return side, price, qty

    def process(self, kind: int, order_id: int, side: int, price: int, qty: int, tif: int) -> None:
        if kind == PLACE:
            if order_id in self.orders:
                return
            left = self._match(side, price, qty)
            if left and tif == GTC:
                self._rest(order_id, side, price, left)
        elif kind == CANCEL:
            if order_id in self.orders:
                self._remove(order_id)
        elif kind == AMEND:
            where = self.orders.get(order_id)
            if where is None or qty <= 0:
                return
            old_side, old_price = where
            if price == old_price:
                book = self.bids if old_side == BUY else self.asks
                for entry in book[old_price]:
                    if entry[0] == order_id:
                        if qty <= entry[1]:
                            entry[1] = qty
                            return
                        break
            self._remove(order_id)
            left = self._match(old_side, price, qty)
            if left:
                self._rest(order_id, old_side, price, left)

    def depth(self, side: int) -> list[tuple[int, int]]:
        """``(price, total quantity)`` levels of one side, best first."""
        book = self.bids if side == BUY else self.asks
        levels = [(price, sum(entry[1] for entry in queue)) for price, queue in book.items()]
        return levels[::-1] if side == BUY else levels
