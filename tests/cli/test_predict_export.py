"""`cifarlab predict` and `cifarlab export` on a tiny trained run: image files of any size and mode,
top-k probabilities, Grad-CAM files, exported files that compute what the PyTorch model does."""

import json

import numpy as np
import pytest
import torch
from conftest import make_image_folder, train_tiny_run
from PIL import Image

from cifarlab.analysis.predict import load_image
from cifarlab.cli import main
from cifarlab.train.checkpoint import load_model

CLASSES = ("cat", "dog", "frog")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """plainnet trained on a three-class folder: cat has a bright left half, dog a bright right half, frog neither."""
    root = tmp_path_factory.mktemp("predict")
    yield train_tiny_run(root, make_image_folder(root / "imgs", classes=CLASSES, size=18), epochs=6)


@pytest.fixture(autouse=True)
def cache(run, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(run.parent / "cache"))


def cli(*args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def train_image(run, cls: str, i: int = 0):
    return run.parent / "imgs" / "train" / cls / f"{i:04d}.png"


def test_predict_top_k_on_training_images(run, capsys):
    images = [train_image(run, c, i) for c in CLASSES for i in (0, 1)]
    code, out, err = cli("predict", run, *images, "--topk", 2, "--json", capsys=capsys)
    assert code == 0, err
    res = json.loads(out)
    assert [r["image"] for r in res] == [str(p) for p in images]
    for r, path in zip(res, images):
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 2 and probs[0] >= probs[1] > 0 and sum(probs) <= 1 + 1e-6
        assert r["top"][0]["class"] == path.parent.name and r["gradcam"] is None
    code, out, err = cli("predict", run, images[0], "--topk", 10, capsys=capsys)
    assert code == 0 and out.count("%") == 3 and out.startswith(f"{images[0]}: cat ")  # k capped at the 3 classes


def test_predict_any_size_and_mode_with_gradcam(run, tmp_path, capsys):
    """Enlarged RGBA PNG, JPEG of another aspect ratio, grey: all resized to 18x18 RGB and still right."""
    img = Image.open(train_image(run, "dog"))
    rgba = img.resize((72, 72), Image.Resampling.NEAREST).convert("RGBA")
    rgba.save(tmp_path / "dog_big.png")
    img.resize((36, 54), Image.Resampling.NEAREST).save(tmp_path / "dog_tall.jpg", quality=95)
    Image.open(train_image(run, "cat")).convert("L").save(tmp_path / "cat_grey.png")
    paths = [tmp_path / "dog_big.png", tmp_path / "dog_tall.jpg", tmp_path / "cat_grey.png"]
    code, out, err = cli("predict", run, *paths, "--gradcam", "--json", capsys=capsys)
    assert code == 0, err
    res = json.loads(out)
    assert [r["top"][0]["class"] for r in res] == ["dog", "dog", "cat"]
    for r, p in zip(res, paths):
        assert r["gradcam"] == str(p.with_name(p.stem + ".gradcam.png")) and Image.open(r["gradcam"]).size[0] > 100
    code, out, err = cli(
        "predict", run, paths[0], "--gradcam", "--layer", "layer1", "--out", tmp_path / "cams", capsys=capsys
    )
    assert code == 0 and (tmp_path / "cams" / "dog_big.gradcam.png").is_file(), err


def test_load_image_converts_mode_and_size(tmp_path):
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[:, :20] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", (10, 12, 3))
    assert x.shape == (10, 12, 3) and x.dtype == torch.uint8
    assert x[5, 1].tolist() == [255, 0, 0] and x[5, -1].tolist() == [255, 255, 255]  # transparent shows white
    g = load_image(tmp_path / "a.png", (28, 28, 1))
    assert g.shape == (28, 28, 1) and g[0, 0, 0] < g[0, -1, 0]  # red is darker than white in grey


def test_predict_reads_the_input_size_from_the_data_of_old_checkpoints(run, tmp_path, capsys):
    ckpt = torch.load(run / "best.pt", weights_only=False)
    del ckpt["image_shape"]
    torch.save(ckpt, tmp_path / "old.pt")
    code, out, err = cli("predict", tmp_path / "old.pt", train_image(run, "frog"), "--json", capsys=capsys)
    assert code == 0 and json.loads(out)[0]["top"][0]["class"] == "frog", err


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.* is deprecated")
@pytest.mark.parametrize("fmt,extra", [("onnx", []), ("onnx", ["--exporter", "legacy"]), ("torchscript", [])])
def test_export_round_trip(run, tmp_path, capsys, fmt, extra):
    if fmt == "onnx":
        pytest.importorskip("onnx", reason="ONNX export needs the export extra: pip install 'cifarlab[export]'")
        if not extra:  # the default exporter is the dynamo one wherever onnxscript is installed
            pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
    out_file = tmp_path / ("m.onnx" if fmt == "onnx" else "m.ts")
    code, out, err = cli("export", run, "--format", fmt, "--out", out_file, *extra, capsys=capsys)
    assert code == 0, err
    assert f"wrote {out_file}" in out and "max abs diff" in out
    assert [p.name for p in tmp_path.iterdir()] == [out_file.name]  # no temporary file left behind
    model, _ = load_model(run)
    x = torch.randn(5, 3, 18, 18)
    with torch.no_grad():
        ref = model(x).numpy()
    if fmt == "onnx":
        assert f"via {'legacy' if extra else 'dynamo'}" in out
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(str(out_file), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out_file)).eval()(x).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_export_default_path_is_beside_the_checkpoint(run, capsys):
    code, out, err = cli("export", run / "last.pt", "--format", "torchscript", capsys=capsys)
    assert code == 0 and (run / "last.torchscript.pt").is_file(), err
    (run / "last.torchscript.pt").unlink()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["predict", "RUN", "NOTE"], "cannot read image"),
        (["predict", "RUN", "/no/such.png"], "image not found"),
        (["predict", "RUN", "IMG", "--topk", "0"], "--topk must be at least 1"),
        (["predict", "RUN", "IMG", "--gradcam", "--layer", "fc"], "N x C x H x W"),
        (["predict", "/no/such.pt", "IMG"], "checkpoint not found"),
        (["export", "RUN", "--format", "tflite"], "unknown export format 'tflite'"),
        (["export", "RUN", "--format", "onnx", "--exporter", "tvm"], "unknown ONNX exporter"),
        (["export", "NOTE", "--format", "onnx"], "cannot read checkpoint"),
    ],
)
def test_bad_input_is_one_line_exit_2(run, tmp_path, capsys, args, needle):
    note = tmp_path / "note.png"
    note.write_text("not an image")
    subst = {"RUN": str(run), "NOTE": str(note), "IMG": str(train_image(run, "cat"))}
    code, out, err = cli(*[subst.get(a, a) for a in args], capsys=capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cifarlab: error:") and needle in lines[0], err
    assert not list(tmp_path.glob("*.gradcam.png"))
