"""Encoders and the joint-fusion model.

`JointFusionModel.forward` returns everything any method needs in one pass: the fusion logits, each
modality's unimodal-head logits, and each modality's part of the fusion head (W_m z_m + b/M, which
sum to the fusion logits) — so utilization rates need no extra forward pass.

Encoders (`build_encoder`): an MLP for vectors; for images a small CNN, ResNet-6/10/18/34/50 made of
torchvision's blocks, or any torchvision classification model ("torchvision:NAME", weights only from
a local file); for token ids a bag of words or a local BERT.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import UserError, check_choice
from .safe_load import load_tensors

FUSIONS = ("concat", "sum")
ENCODERS = ("auto", "mlp", "cnn", "resnet6", "resnet10", "resnet18", "resnet34", "resnet50", "bow", "bert")
TEXT_ENCODERS = ("bow", "bert")  # for token-id inputs (N, L)
TORCHVISION = "torchvision:"  # besides ENCODERS, any torchvision classifier: "torchvision:NAME[@WEIGHTS_FILE]"
_LIST_TORCHVISION = "python -c 'import torchvision as tv; print(tv.models.list_models(tv.models))'"


class MLPEncoder(nn.Module):
    """For vector inputs (N, D) → (N, feature_dim): two hidden ReLU layers."""

    def __init__(self, in_features: int, feature_dim: int = 64, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, feature_dim), nn.ReLU())

    def forward(self, x):
        return self.net(x.flatten(1))


class SmallCNN(nn.Module):
    """For small images (N, C, H, W) → (N, feature_dim): three 3×3 conv-BN-ReLU layers of widths
    w, 2w and feature_dim, the first two with stride 2, then global average pooling. Strided
    convolutions rather than max pooling: three times cheaper on a CPU, and it trains in seconds."""

    def __init__(self, in_channels: int, feature_dim: int = 64, width: int = 16):
        super().__init__()

        def block(c_in, c_out, stride):
            return [nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.net = nn.Sequential(*block(in_channels, width, 2), *block(width, 2 * width, 2),
                                 *block(2 * width, feature_dim, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


# depth → (torchvision.models.resnet block, blocks per stage). ResNet-6 and -10 are the shallow
# variants the paper uses: one block per stage, with 2 and 4 stages; depth counts the stem conv, the
# block convs and the head.
RESNETS = {6: ("BasicBlock", (1, 1)), 10: ("BasicBlock", (1, 1, 1, 1)), 18: ("BasicBlock", (2, 2, 2, 2)),
           34: ("BasicBlock", (3, 4, 6, 3)), 50: ("Bottleneck", (3, 4, 6, 3))}


class ResNet(nn.Module):
    """ResNet encoder of a given depth (6, 10, 18, 34, 50) for (N, C, H, W) → (N, feature_dim), made of
    torchvision's `BasicBlock`/`Bottleneck` with torchvision's module names (conv1, bn1, layer1, …) and
    downsample shortcuts: at width 64, with 3 channels and the ImageNet stem, our ResNet-18/34/50 has
    torchvision's `resnet18/34/50` architecture and parameter count, its `fc` named `project`.
    Initialization stays PyTorch's default, drawn in the order the encoder always used (each block's
    convolutions before its shortcut), so a run made before torchvision's blocks were used keeps its
    numbers at the same seed (torchvision's own ResNet re-draws convolutions with `kaiming_normal_`).

    Inputs of 64 pixels or more use the ImageNet stem (7×7 stride-2 conv + max pool); smaller ones a
    3×3 stride-1 stem so 28×28 digits are not reduced to a pixel. A final linear layer maps the
    pooled features to `feature_dim` when `feature_dim` is given (so both encoders of a sum fusion
    share a width); with `feature_dim=None` the pooled width is kept (the last stage's: 512 for
    ResNet-10/18/34 and 2048 for ResNet-50 at width 64, 128 for ResNet-6)."""

    def __init__(self, depth: int, in_channels: int, input_size: int, feature_dim: int | None = None,
                 width: int = 64):
        super().__init__()
        if depth not in RESNETS:
            raise UserError(f"unknown ResNet depth {depth}; choose one of {sorted(RESNETS)}")
        # torchvision's own ResNet class fixes four stages and width 64, so the stages are composed here
        # as its `_make_layer` does; imported here, not at the top, as torchvision takes seconds to import
        from torchvision.models import resnet as tv_resnet
        block_name, blocks = RESNETS[depth]
        block = getattr(tv_resnet, block_name)
        small = input_size < 64
        self.conv1 = tv_resnet.conv3x3(in_channels, width) if small \
            else nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small else nn.MaxPool2d(3, 2, 1)
        c_in = width
        for i, count in enumerate(blocks):
            layer, c_in = _resnet_layer(block, c_in, width * 2 ** i, count, stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", layer)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.project = nn.Identity() if feature_dim is None else nn.Linear(c_in, feature_dim)
        self.feature_dim = c_in if feature_dim is None else feature_dim

    @property
    def layers(self) -> list[nn.Sequential]:
        """The residual stages layer1, layer2, … in order, each a sequence of blocks of one width."""
        return [module for name, module in self.named_children() if name.startswith("layer")]

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in self.layers:
            x = layer(x)
        return self.project(self.avgpool(x).flatten(1))


def _resnet_layer(block, c_in: int, planes: int, count: int, stride: int) -> tuple[nn.Sequential, int]:
    """`count` blocks of `planes` after `c_in` channels, and their output width; the first block's
    shortcut is a strided 1×1 conv + BN when the shape changes (torchvision `_make_layer`'s). The
    shortcut is made after its block's convolutions (torchvision makes it first): the order in which
    the default initialization draws them, kept from the encoder's first version."""
    from torchvision.models.resnet import conv1x1
    c_out = planes * block.expansion
    first = block(c_in, planes, stride)
    if stride != 1 or c_in != c_out:
        first.downsample = nn.Sequential(conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))
    return nn.Sequential(first, *[block(c_out, planes) for _ in range(count - 1)]), c_out


class BagOfWordsEncoder(nn.Module):
    """Token ids (N, L), `pad_id` for padding → (N, feature_dim): the mean of learned word embeddings
    over the real tokens, then a ReLU layer. Trains from scratch in seconds; a text baseline that
    needs no pretrained weights."""

    def __init__(self, vocab_size: int, feature_dim: int = 64, embed_dim: int = 128, pad_id: int = 0):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean", padding_idx=pad_id)
        self.out = nn.Sequential(nn.Linear(embed_dim, feature_dim), nn.ReLU())

    def forward(self, ids):
        return self.out(self.embed(ids))


class BertEncoder(nn.Module):
    """A pretrained BERT from a local folder (Hugging Face `transformers`, an optional extra) over token
    ids (N, L) made by that model's own tokenizer; its [CLS] vector projected to `feature_dim`.

    Weights are read only from `path` (`local_files_only=True`): milesbook never downloads them."""

    def __init__(self, path: str, feature_dim: int = 64, pad_id: int = 0):
        super().__init__()
        try:
            import transformers
        except ImportError:
            raise UserError("the 'bert' text encoder needs Hugging Face transformers: "
                            "pip install 'milesbook[text]'") from None
        try:
            self.bert = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as error:
            raise UserError(f"could not load a BERT model from {path} ({error}); give the folder of a saved "
                            "model (config.json + weights), e.g. one `huggingface-cli download "
                            "bert-base-uncased --local-dir DIR` filled") from None
        self.pad_id = pad_id
        self.project = nn.Linear(self.bert.config.hidden_size, feature_dim)

    def forward(self, ids):
        mask = (ids != self.pad_id).long()
        return self.project(self.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0])


class TorchvisionEncoder(nn.Module):
    """A torchvision classification model `name` (`torchvision.models.get_model`) for (N, C, H, W) →
    (N, feature_dim): its last module, the classifier's Linear (resnet's `fc`, vgg's `classifier[6]`,
    vit's `heads.head`, …), replaced by a Linear to `feature_dim`.

    `weights` is a local file of that model's state dict as torchvision builds it
    (`torch.save(torchvision.models.get_model(name, weights=...).state_dict(), path)`), read with
    `weights_only=True`; the head's keys are dropped. Nothing is downloaded. When the input has C ≠ 3
    channels the first convolution is rebuilt for C: each of its C input filters is the sum of the
    RGB filters divided by C, so an input whose C channels all equal a gray image gets the response
    the model gives that gray image as RGB."""

    def __init__(self, name: str, in_channels: int, feature_dim: int, weights: str | None = None):
        super().__init__()
        import torchvision  # imported here, not at the top: it takes seconds
        if name not in torchvision.models.list_models(torchvision.models):
            raise UserError(f"unknown torchvision classification model {name!r}; "
                            f"see the names with {_LIST_TORCHVISION}")
        self.net = torchvision.models.get_model(name, weights=None)
        head_name, head = list(self.net.named_modules())[-1]
        if not isinstance(head, nn.Linear):
            raise UserError(f"torchvision model {name!r} ends in {type(head).__name__} ({head_name}), not in a Linear "
                            "classifier, so milesbook cannot replace its head; choose another, e.g. resnet18")
        if weights:
            _load_without_head(self.net, weights, name, head_name)
        conv_name, conv = next((n, m) for n, m in self.net.named_modules() if isinstance(m, nn.Conv2d))
        if conv.in_channels != in_channels:
            _replace(self.net, conv_name, _conv_for_channels(conv, in_channels))
        _replace(self.net, head_name, nn.Linear(head.in_features, feature_dim))

    def forward(self, x):
        return self.net(x)


def parse_torchvision_kind(kind: str) -> tuple[str, str | None]:
    """"torchvision:resnet18@/w.pt" → ("resnet18", "/w.pt"); without "@FILE" the weights are None."""
    name, _, weights = kind.removeprefix(TORCHVISION).partition("@")
    return name, weights or None


def _load_without_head(net: nn.Module, path: str, name: str, head_name: str) -> None:
    """Load the state dict in file `path` into `net`, all but the keys of module `head_name`."""
    how = f"save one with torch.save(torchvision.models.get_model({name!r}, weights=...).state_dict(), PATH)"
    if not Path(path).is_file():
        raise UserError(f"no weights file {path} for torchvision model {name!r}; {how}")
    state = load_tensors(Path(path), "cpu", how)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict of tensors; {how}")
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(head_name + ".")}
    state = {k: v for k, v in state.items() if not k.startswith(head_name + ".")}
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    resized = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or resized:
        found = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in
                 ((missing, "missing"), (unexpected, "unexpected"), (resized, "of another shape")) if keys]
        raise UserError(f"{path} does not fit torchvision model {name!r}: keys {', '.join(found)}; {how}")
    net.load_state_dict(state, strict=False)


def _conv_for_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of `conv` for `in_channels` inputs whose every input filter is Σ(conv's filters) / in_channels."""
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(1, keepdim=True).expand_as(new.weight) / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _replace(net: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where `net`'s submodule `name` ("classifier.6") is."""
    parent, _, attribute = name.rpartition(".")
    setattr(net.get_submodule(parent), attribute, module)


def parse_encoder_spec(spec: str, modalities) -> dict[str, str]:
    """"resnet18" → that kind for every modality; "image=resnet50,text=bow" → one per modality
    (modalities not named get "auto"). A kind may be "torchvision:NAME[@WEIGHTS_FILE]", whose file path
    then holds no comma."""
    if "=" not in spec:
        return {m: spec for m in modalities}
    kinds = {m: "auto" for m in modalities}
    for item in spec.split(","):
        name, _, kind = item.partition("=")
        check_choice("modality in --encoder", name.strip(), modalities)
        kinds[name.strip()] = kind.strip()
    return kinds


def build_encoder(kind: str, shape: tuple[int, ...], feature_dim: int, options: dict | None = None,
                  modality: str = "") -> nn.Module:
    """An encoder for samples of `shape`: (D,) vectors, (C, H, W) images, or (L,) token ids when the
    dataset's `options` say so ({"tokens": True, "vocab_size": V, "kind": default, "path": BERT}).
    `kind` is one of `ENCODERS`, "torchvision:NAME[@WEIGHTS_FILE]" (`TorchvisionEncoder`, images) or
    "package.module:factory" (your own: `encoder_from_factory`, then `adopt_encoder`); "auto" takes
    the dataset's default, else an MLP for vectors and the small CNN for images."""
    if ":" in kind and not kind.startswith(TORCHVISION):
        return adopt_encoder(encoder_from_factory(kind, shape, feature_dim), shape, feature_dim, options, modality)
    if not kind.startswith(TORCHVISION):
        check_choice("encoder", kind, (*ENCODERS, f"{TORCHVISION}NAME[@WEIGHTS_FILE]", "package.module:factory"))
    options = options or {}
    if kind == "auto":
        kind = options.get("kind") or ("mlp" if len(shape) == 1 else "cnn")
    if options.get("tokens") or kind in TEXT_ENCODERS:
        if not options.get("tokens") or kind not in TEXT_ENCODERS:
            what = "token ids" if options.get("tokens") else f"samples of shape {shape}"
            raise UserError(f"encoder {kind!r} cannot encode {what}; text takes {' or '.join(TEXT_ENCODERS)}, "
                            "other inputs the rest — give one per modality, e.g. --encoder image=resnet50,text=bow")
        if kind == "bow":
            return BagOfWordsEncoder(options["vocab_size"], feature_dim, pad_id=options.get("pad_id", 0))
        if not options.get("path"):
            raise UserError("encoder 'bert' needs the text tokenized by that BERT: --data-option text_model DIR "
                            "(a local folder of bert-base-uncased; nothing is downloaded)")
        return BertEncoder(options["path"], feature_dim, pad_id=options.get("pad_id", 0))
    if kind == "mlp":
        return MLPEncoder(math.prod(shape), feature_dim)
    if len(shape) != 3:
        raise UserError(f"encoder {kind!r} needs (channels, height, width) samples, got shape {shape}")
    if kind == "cnn":
        return SmallCNN(shape[0], feature_dim)
    if kind.startswith(TORCHVISION):
        name, weights = parse_torchvision_kind(kind)
        return TorchvisionEncoder(name, shape[0], feature_dim, weights)
    return ResNet(int(kind.removeprefix("resnet")), shape[0], min(shape[1:]), feature_dim)


@dataclass
class FusionOutput:
    """Logits, each (N, num_classes): `fusion` = ŷ_AB; `heads[m]` = modality m's unimodal head;
    `parts[m]` = W_m z_m + b/M, modality m's share of the fusion logits (Σ_m parts[m] = fusion);
    and `features[m]` = z_m (N, feature_dim), the encoder's output (PMR's prototypes are built on it)."""
    fusion: torch.Tensor
    heads: dict[str, torch.Tensor]
    parts: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor] = field(default_factory=dict)


class JointFusionModel(nn.Module):
    """Encoders f_m, a linear unimodal head per encoder and one linear fusion head g over the fused
    features: concatenation [z_A; z_B] or summation z_A + z_B (all encoders give `feature_dim`).

    With a single modality this is the unimodal reference model (its fusion head is its head)."""

    def __init__(self, encoders: dict[str, nn.Module], feature_dim: int, num_classes: int,
                 fusion: str = "concat"):
        super().__init__()
        self.fusion_kind = check_choice("fusion", fusion, FUSIONS)
        self.modalities = tuple(encoders)
        self.feature_dim = feature_dim
        self.encoders = nn.ModuleDict(encoders)
        self.heads = nn.ModuleDict({m: nn.Linear(feature_dim, num_classes) for m in encoders})
        fused_dim = feature_dim * len(encoders) if fusion == "concat" else feature_dim
        self.fusion_head = nn.Linear(fused_dim, num_classes)

    def forward(self, inputs: dict[str, torch.Tensor], detach_heads: bool = False) -> FusionOutput:
        """`inputs[m]`: (N, *shape_m). With `detach_heads` the unimodal heads see z_m.detach(), so they
        are linear probes that never move the encoders."""
        features = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        heads = {m: self.heads[m](z.detach() if detach_heads else z) for m, z in features.items()}
        weight, bias = self.fusion_head.weight, self.fusion_head.bias
        share = bias / len(self.modalities)
        parts = {}
        for i, (m, z) in enumerate(features.items()):
            w_m = weight[:, i * self.feature_dim:(i + 1) * self.feature_dim] if self.fusion_kind == "concat" \
                else weight
            parts[m] = z @ w_m.t() + share
        fusion = sum(parts.values())
        return FusionOutput(fusion, heads, parts, features)

    def param_groups(self, lr: float) -> list[dict]:
        """Adam param groups named "fusion" (the fusion head) and one per modality (its encoder and
        unimodal head), all at `lr` — the layout MILES and the other schedulers act on."""
        groups = [{"params": list(self.fusion_head.parameters()), "name": "fusion", "lr": lr}]
        for m in self.modalities:
            params = list(self.encoders[m].parameters()) + list(self.heads[m].parameters())
            groups.append({"params": params, "name": m, "lr": lr})
        return groups


def build_model(shapes: dict[str, tuple[int, ...]], num_classes: int, fusion: str = "concat",
                encoder: str = "auto", feature_dim: int = 64,
                encoder_options: dict[str, dict] | None = None,
                given: dict[str, nn.Module] | None = None) -> JointFusionModel:
    """A joint-fusion model with an encoder per modality of `shapes` ({modality: sample shape}):
    `encoder` is one kind for all or "m=kind,..." (`parse_encoder_spec`); `encoder_options` are the
    dataset's per-modality hints (`MultimodalDataset.encoder_options`); `given` {modality: nn.Module}
    are your own encoders, used instead (`adopt_encoder`)."""
    kinds = parse_encoder_spec(encoder, list(shapes))
    options, given = encoder_options or {}, given or {}
    encoders = {m: adopt_encoder(given[m], shape, feature_dim, options.get(m), m) if m in given else
                build_encoder(kinds[m], shape, feature_dim, options.get(m), m) for m, shape in shapes.items()}
    return JointFusionModel(encoders, feature_dim, num_classes, fusion)


def adopt_encoder(module: nn.Module, shape: tuple[int, ...], feature_dim: int, options: dict | None = None,
                  modality: str = "") -> nn.Module:
    """Your own encoder for samples of `shape`, as a run uses it: a copy (every run starts from the
    weights you gave), its output width D read from a dry run on two zero samples (eval mode, no
    gradient), and a linear map D → `feature_dim` after it when D differs (the fusion head and the
    other encoders share one width)."""
    import copy
    if not isinstance(module, nn.Module):
        raise UserError(f"the encoder given for {modality!r} is a {type(module).__name__}, not a torch.nn.Module")
    module = copy.deepcopy(module)
    tokens = bool((options or {}).get("tokens"))
    sample = torch.zeros((2, *shape), dtype=torch.long if tokens else torch.float32,
                         device=next(module.parameters(), torch.zeros(())).device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(sample)
    except Exception as error:  # the user's code: say which encoder and what it was given
        raise UserError(f"the encoder for {modality!r} ({type(module).__name__}) fails on a batch of shape "
                        f"{tuple(sample.shape)} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                        "it must map a batch (B, *sample shape) to features (B, D)") from None
    module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"the encoder for {modality!r} ({type(module).__name__}) returns {got} for a batch of "
                        f"{tuple(sample.shape)}; it must return features of shape (B, D)")
    width = out.shape[1]
    return module if width == feature_dim else nn.Sequential(module, nn.Linear(width, feature_dim))


def encoder_from_factory(spec: str, shape: tuple[int, ...], feature_dim: int) -> nn.Module:
    """`--encoder MODALITY=package.module:factory`: import the module and call the factory, with the
    keywords it accepts among `shape` (the sample shape) and `feature_dim`."""
    import importlib
    import inspect
    module_name, _, name = spec.partition(":")
    if not module_name or not name or module_name.startswith(".") or not all(
            part.isidentifier() for part in [*module_name.split("."), *name.split(".")]):
        raise UserError(f"--encoder {spec}: not package.module:factory (dotted names, no relative import); e.g. "
                        "--encoder image=mypackage.encoders:make_encoder")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise UserError(f"--encoder {spec}: cannot import {name} from {module_name} ({error}); give "
                        "package.module:factory with the package on PYTHONPATH") from None
    if not callable(factory):
        raise UserError(f"--encoder {spec}: {name} is a {type(factory).__name__}, not a function or class")
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a built-in without a signature
        accepted = {}
    try:
        module = factory(**{k: v for k, v in (("shape", shape), ("feature_dim", feature_dim)) if k in accepted})
    except Exception as error:  # the user's code: say which factory and what it raised
        raise UserError(f"--encoder {spec}: calling {name}() failed ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:120] if str(error) else ''}); it must build an nn.Module, taking "
                        "shape= and feature_dim= if it wants them") from None
    if not isinstance(module, nn.Module):
        raise UserError(f"--encoder {spec}: {name}() returned a {type(module).__name__}, not a torch.nn.Module")
    return module
