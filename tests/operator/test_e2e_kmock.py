"""The operator end to end against kmock's emulated Kubernetes API."""

from __future__ import annotations

from conftest import ISVC_PATH, eventually, inference_service, live


async def test_create_makes_children(operator):
    response = await operator.post(ISVC_PATH, json=inference_service())
    assert response.status == 201 or response.status == 200
    dep = await eventually(lambda: live(operator, "apps/v1/deployments", "qwen-runtime"))
    print(dep)
