"""Writes study.ipynb (no outputs) from the cells below: edit here, then `python examples/make_study_notebook.py`.

The notebook does the whole study at tiny scale with `import cifarlab` only; tests/api/test_notebook.py
executes it (and checks it matches this script).
"""

from pathlib import Path

import nbformat

CELLS = [
    (
        "markdown",
        """# The CNN study from Python, at tiny scale

Train, compare, Grad-CAM, a loss landscape, the Hessian, batch-normalization probes, DessiLBI with
pruning, and a sweep into a DataFrame: one `import cifarlab`, one call per job, arrays back.
The numbers mean nothing at this scale (a few hundred images, one epoch); the calls are the ones a
real study makes. Data: `$CIFARLAB_DATA` (a local copy, e.g. `../shared/data`), else downloaded.""",
    ),
    (
        "code",
        """import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import nn

import cifarlab

torch.manual_seed(0)
torch.set_flush_denormal(True)  # on a CPU, denormal floats make this barely trained net's analyses 5x slower
TINY = {"data.n_items": 512, "data.n_test": 200, "train.epochs": 1}  # the scale knob of every run below
print(cifarlab.__version__, len(cifarlab.list_models()), "models in the zoo")""",
    ),
    ("markdown", "## 1. Train: the `quick` preset; `run.model` is the trained network, normalization inside"),
    (
        "code",
        """run = cifarlab.fit("quick", overrides=TINY)  # out=None: a fresh temporary run folder, so rerunning works
print(f"final test accuracy {run.summary['final_test_acc']:.3f}, run folder {run.run_dir}")
pd.DataFrame(run.history)[["epoch", "train_loss", "train_acc", "test_acc", "seconds"]]""",
    ),
    ("markdown", "## 2. Compare two models of the zoo (and `load` a run back from its folder)"),
    (
        "code",
        """SMALL = {**TINY, "optim.name": "adam", "optim.lr": 0.003, "train.progress": False}
rows = []
for name in ["plainnet", "resnet_small"]:
    r = cifarlab.fit(None, overrides={**SMALL, "model.name": name, "model.args": {"stages": [16, 32]}})
    rows.append({"model": name, "params": r.summary["params"], "final_test_acc": r.summary["final_test_acc"]})
data = cifarlab.load_data("cifar10", n_test=200)
clf = cifarlab.load(r.run_dir)  # a Classifier: takes uint8 images as the dataset stores them
assert (clf.predict(data.test_x) == r.predict(data.test_x)).all()
pd.DataFrame(rows)""",
    ),
    ("markdown", "## 3. Grad-CAM: where the network looks (the predicted class; any layer, by name or module)"),
    (
        "code",
        """images = data.test_x[:6]
cams = cifarlab.gradcam(run.model, images)  # N x H x W numpy
print(cams.shape, [data.classes[i] for i in run.predict(images)])
fig, axes = plt.subplots(2, 6, figsize=(9, 3))
for i in range(6):
    axes[0, i].imshow(images[i])
    axes[1, i].imshow(cams[i], cmap="jet")
for ax in axes.flat:
    ax.axis("off")""",
    ),
    ("markdown", "## 4. The loss landscape around the trained weights (filter-normalized random directions)"),
    (
        "code",
        """x, y = data.train_x[:128], data.train_y[:128]
ls = cifarlab.landscape(run.model, x, y, dims=2, grid="-1:1:5")  # a real one: grid="-1:1:51", 10,000 images
plt.contourf(ls["axes"][0], ls["axes"][1], ls["loss"].T, levels=20)
plt.colorbar(label="loss")
print(f"loss at the centre {ls['loss'][2, 2]:.3f}, max {ls['loss'].max():.3f}")""",
    ),
    ("markdown", "## 5. The Hessian: top eigenvalue and trace, on the trained network or any module you write"),
    (
        "code",
        """xs, ys = x[:64], y[:64]
print("top eigenvalue", cifarlab.hessian_eigs(run.model, xs, ys, k=1, iters=10))
print("trace (Hutchinson, 5 samples)", cifarlab.hessian_trace(run.model, xs, ys, samples=5))""",
    ),
    (
        "markdown",
        """## 6. Batch normalization: Santurkar et al.'s probes, and the BN study on your own modules
`probes` measures one batch at the current weights; `bn_study` trains each model at each learning rate
and probes along the way (zoo names work too: `models=["VGG_A", "VGG_A_BatchNorm"]`).""",
    ),
    (
        "code",
        """def small_cnn(bn: bool) -> nn.Module:
    layers = []
    for c_in, c_out in [(3, 16), (16, 32)]:
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), *([nn.BatchNorm2d(c_out)] if bn else []), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * 8 * 8, 10))

net = small_cnn(bn=True)
xb = data.train_x[:64].permute(0, 3, 1, 2).float() / 255
p = cifarlab.probes(net, xb, data.train_y[:64], etas=[0.05, 0.1, 0.2, 0.4])
print("loss along -g:", p["loss"].round(4), " beta:", p["beta"].round(2))
study = cifarlab.bn_study(
    models=[("plain", small_cnn(False)), ("bn", small_cnn(True))],
    epochs=1, n_items=512, n_test=200, lrs=[1e-3], probe_every=2, n_etas=4, progress=False,
)
pd.DataFrame(study["runs"])""",
    ),
    ("markdown", "## 7. DessiLBI: SLBI as a torch optimizer on LeNet/MNIST, then prune by its selection order"),
    (
        "code",
        """train, test = cifarlab.loaders("mnist", batch_size=128, normalize="none", n_items=2048, n_test=500, device="cpu")
lenet = cifarlab.create_model("LeNet", in_channels=1)
opt = cifarlab.SLBI(lenet, lr=0.1, kappa=1.0, mu=20.0)
for epoch in range(2):
    train.set_epoch(epoch)
    for xb, yb in train:
        opt.zero_grad()
        nn.functional.nll_loss(lenet(xb), yb).backward()
        opt.step()
    opt.end_epoch(epoch)  # records the order in which Gamma selected the filters

def accuracy(model):
    with torch.no_grad():
        return sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in test) / len(test.labels)

before = accuracy(lenet)
report = cifarlab.prune(opt, lenet, 80, ["conv3.weight"])
after = accuracy(lenet)
cifarlab.recover(opt, lenet)
print(f"accuracy {before:.3f}, pruned conv3 at 80%: {after:.3f} "
      f"({report['layers']['conv3.weight']['removed']} filters removed), recovered: {accuracy(lenet):.3f}")""",
    ),
    ("markdown", "## 8. A sweep into a DataFrame: each combination x seed is one run of the engine"),
    (
        "code",
        """base = {"model": {"name": "plainnet", "args": {"stages": [16, 32]}}, **SMALL}
rows = cifarlab.sweep(base, {"optim.lr": [0.003, 0.01]}, seeds=[0, 1])
df = pd.DataFrame(rows)
df.groupby("optim.lr")["final_test_acc"].agg(["mean", "std", "count"])""",
    ),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    make = {"markdown": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell}
    nb.cells = [make[kind](source) for kind, source in CELLS]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: the file changes only when a cell does
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


if __name__ == "__main__":
    nbformat.write(build(), Path(__file__).with_name("study.ipynb"))
