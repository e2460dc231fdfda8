"""Where a fit stands in its data (jemfast.train.data_position): resumed epochs repeat a straight run's batches."""

from __future__ import annotations

import torch

from jemfast.train.data_position import epoch_batches, epoch_start


def _loader(seed=0):
    data = torch.utils.data.TensorDataset(torch.arange(20))
    return torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed))


def _ids(batches):
    return [batch[0].tolist() for batch in batches]


def test_a_fresh_epoch_records_its_generator_states():
    loader = _loader()
    position = epoch_start()
    assert position == {"batch_in_epoch": 0, "epoch_rng": None, "epoch_gen": None, "next_gen": None}
    gen_state = loader.generator.get_state()
    rng_state = torch.get_rng_state()
    batches = _ids(epoch_batches(loader, 0, position))
    assert sorted(sum(batches, [])) == list(range(20))
    assert torch.equal(position["epoch_gen"], gen_state)
    assert torch.equal(position["epoch_rng"], rng_state)


def test_resuming_mid_epoch_yields_the_rest_of_the_same_epoch():
    torch.manual_seed(1)
    straight_loader = _loader()
    list(epoch_batches(straight_loader, 0, epoch_start()))
    straight = epoch_start()  # epoch 1 starts where the generator stands, as in the resumed run below
    iterator = epoch_batches(straight_loader, 1, straight)
    first = _ids([next(iterator), next(iterator)])
    straight["batch_in_epoch"] = 2
    rest = _ids(iterator)

    saved = dict(straight)
    torch.manual_seed(99)  # the resumed process's global generator is elsewhere
    before = torch.get_rng_state()
    fresh = _loader()  # rebuilt from the seed: its generator is at epoch 0's shuffle
    assert _ids(fresh)[:2] != first
    resumed = _ids(epoch_batches(_loader(), 1, saved))
    assert resumed == rest
    assert torch.equal(torch.get_rng_state(), before), "the global generator is left as it was"


def test_the_next_epoch_starts_where_the_loaders_generator_stood():
    loader = _loader()
    list(epoch_batches(loader, 0, epoch_start()))
    position = epoch_start(loader)
    expected = _ids(loader)  # the epoch a straight run would see next

    rebuilt = _loader()  # a resumed run rebuilds its loader from the seed
    assert _ids(epoch_batches(rebuilt, 1, position)) == expected


def test_set_epoch_is_passed_to_the_sampler_and_dataset():
    seen = []

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.tensor(i)

        def set_epoch(self, epoch):
            seen.append(epoch)

    list(epoch_batches(torch.utils.data.DataLoader(Data(), batch_size=2), 7, epoch_start()))
    assert seen == [7]
