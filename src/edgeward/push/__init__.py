"""SubscribeEvents fan-out: the push hub (``hub``) and the backend push stream's follower (``dispatcher``)."""
