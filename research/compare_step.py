"""Does the Keras airbench94 compute what airbench's own code computes? One training-mode
forward pass and the gradients of the mean loss, from the same weights and the same 256
training images, in both.

    .venv/bin/python research/compare_step.py keras SPLIT.npz OUT.npz     # this project's env
    TORCHENV/bin/python research/compare_step.py torch SPLIT.npz OUT.npz  # torch's env

The first builds the Keras network (whitening from the split's training part) and writes its
weights, probabilities, loss and gradients; the second loads those weights into
``airbench94_torch``'s network and prints the largest differences, against PyTorch in float32
and in float64 (the float32 rounding of the gradient through BatchNorm is itself ~1e-2).
"""

import sys

import numpy as np

BATCH = 256
CONVS = [f"block{b}_conv{c}" for b in (1, 2, 3) for c in (1, 2)]


def keras_side(split: str, out: str) -> None:
    import keras
    import tensorflow as tf

    from cifar10_training.airbench import build_airbench94

    d = np.load(split)
    model = build_airbench94(d["x_train"], seed=0)
    x = d["x_train"][:BATCH].astype("float32") / 255.0
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)
    with tf.GradientTape() as tape:
        probs = model(x, training=True)
        loss = loss_fn(tf.one_hot(d["y_train"][:BATCH], 10), probs)
    grads = tape.gradient(loss, model.trainable_variables)
    np.savez(out, probs=np.array(probs), loss=float(loss),
             **{"w/" + v.path: v.numpy() for v in model.weights},
             **{"g/" + v.path: np.array(g) for v, g in zip(model.trainable_variables, grads)})


def torch_side(split: str, keras_npz: str) -> None:
    import torch

    import airbench94_torch as ref

    k, d = np.load(keras_npz), np.load(split)

    def to_torch(name):  # Keras HWIO / (in, out) -> PyTorch OIHW / (out, in)
        w = k["w/" + name]
        return torch.tensor(w.transpose(3, 2, 0, 1) if w.ndim == 4 else w.T)

    def from_torch(t):
        return t.permute(2, 3, 1, 0).numpy() if t.ndim == 4 else (t.T.numpy() if t.ndim == 2 else t.numpy())

    pairs = [("0.weight", "whitening/kernel"), ("0.bias", "whitening/bias"), ("7.weight", "head/kernel")]
    pairs += [(f"{b + 1}.conv{name[-1]}.weight", name + "/kernel") for name in CONVS for b in [int(name[5])]]
    pairs += [(f"{b + 1}.norm{name[-1]}.bias", name.replace("conv", "norm") + "/beta")
              for name in CONVS for b in [int(name[5])]]
    x = ref.normalize(torch.tensor(d["x_train"][:BATCH]).float().div(255).permute(0, 3, 1, 2))
    y = torch.tensor(d["y_train"][:BATCH]).long()
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        net = ref.make_net().to(dtype)
        state = net.state_dict()
        for torch_name, keras_name in pairs:
            state[torch_name].copy_(to_torch(keras_name))
        net.train()
        out = net(x.to(dtype))
        loss = loss_fn(out, y)
        loss.backward()
        params = dict(net.named_parameters())
        grads[dtype] = {keras_name: from_torch(params[t].grad) for t, keras_name in pairs if params[t].grad is not None}
        if dtype == torch.float32:
            print(f"probabilities: max |delta| {np.abs(out.softmax(1).detach().numpy() - k['probs']).max():.1e}; "
                  f"loss {loss.item():.6f} here, {float(k['loss']):.6f} in Keras")
    print(f"{'gradient':22s} {'Keras vs f64':>12s} {'torch f32 vs f64':>16s}   (max |delta| / max |g|)")
    for name, g64 in grads[torch.float64].items():
        scale = np.abs(g64).max()
        print(f"{name:22s} {np.abs(k['g/' + name] - g64).max() / scale:12.1e} "
              f"{np.abs(grads[torch.float32][name] - g64).max() / scale:16.1e}")


if __name__ == "__main__":
    side, split_npz, other = sys.argv[1:4]
    keras_side(split_npz, other) if side == "keras" else torch_side(split_npz, other)
