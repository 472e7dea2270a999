from ninja import Router

router = Router(tags=["teachers"])
