"""MoEClient's missing_experts against a scripted router: a partial reply's list is checked
against the model's num_experts (one Info call, cached) before it becomes Python ints, so a
malformed list is InternalError in memory bounded by the reply, and a valid one is kept."""

import tracemalloc

import numpy as np
import pytest

from moe_client import InternalError, MoEClient, PartialResultError
from moe_client._stubs import router_pb2
from scripted_router import ScriptedRouter

ROWS = np.arange(8, dtype=np.float32).reshape(2, 4)


def partial(missing):
    """A reply to ROWS that leaves out `missing`."""
    return router_pb2.ForwardResponse(
        output=router_pb2.Tensor(shape=ROWS.shape, values=ROWS.ravel()),
        missing_experts=missing).SerializeToString()


def test_a_list_longer_than_the_model_is_internal_and_never_becomes_python_ints():
    # 3 million ascending ids (~9 MB): the client made a tuple of 3 million ints of them
    # (130 MB at the peak) before it knew num_experts.
    data = partial(range(3_000_000))
    with ScriptedRouter([data]) as router:
        with MoEClient(router.target, accept_partial=True) as client:
            tracemalloc.start()
            try:
                with pytest.raises(InternalError) as caught:
                    client.forward(ROWS)
                peak = tracemalloc.get_traced_memory()[1]  # the reply's bytes included
            finally:
                tracemalloc.stop()
    assert peak < 3 * len(data), f"{peak} bytes held to refuse a reply of {len(data)} bytes"
    assert caught.value.details == ("malformed ForwardResponse: missing_experts lists 3000000 "
                                    "experts; the model has 8 (Info's num_experts)")


@pytest.mark.parametrize("missing, message", [
    ([2, 8], "names expert 8; expected ids in [0, 8)"),
    ([-1, 3], "names expert -1; expected ids in [0, 8)"),
    ([3, 3], "lists 3 after 3; expected distinct ids in ascending order"),
    ([4, 2], "lists 2 after 4; expected distinct ids in ascending order"),
])
def test_ids_the_router_cannot_send_are_internal(missing, message):
    with ScriptedRouter([partial(missing)]) as router:
        with MoEClient(router.target, accept_partial=True) as client:
            with pytest.raises(InternalError, match="malformed ForwardResponse: missing_experts "
                               + message.replace("[", r"\[").replace(")", r"\)")):
                client.forward(ROWS)


def test_num_experts_is_asked_once_and_again_only_when_a_list_does_not_fit_it():
    with ScriptedRouter([partial([1, 7]), partial([0]), "echo", partial([12])]) as router:
        with MoEClient(router.target, accept_partial=True) as client:
            assert client.forward(ROWS).missing_experts == (1, 7)
            assert client.forward(ROWS).missing_experts == (0,)
            assert client.forward(ROWS).missing_experts == ()
            assert router.info_calls == 1
            router.num_experts = 16  # as if restarted with a larger model
            assert client.forward(ROWS).missing_experts == (12,)
            assert router.info_calls == 2


def test_a_valid_partial_result_still_raises_unless_accepted():
    with ScriptedRouter([partial([3])]) as router, MoEClient(router.target) as client:
        with pytest.raises(PartialResultError) as caught:
            client.forward(ROWS)
    assert caught.value.missing_experts == (3,)
    np.testing.assert_array_equal(caught.value.result.output, ROWS)
