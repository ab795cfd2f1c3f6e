"""The decoder shell every architecture shares.

``embedding -> N x (norm -> token mixer -> residual -> norm -> MLP -> residual) -> norm -> LM head``

An architecture supplies a config (subclass of :class:`RecurrentConfig`) and a token mixer; it declares its model
classes in three lines each::

    class HfrGLAPreTrainedModel(RecurrentPreTrainedModel):
        config_class = HfrGLAConfig
        mixer_class = GatedLinearAttention

    class HfrGLAModel(HfrGLAPreTrainedModel, RecurrentModel): ...

    class HfrGLAForCausalLM(HfrGLAPreTrainedModel, RecurrentForCausalLM):
        base_model_class = HfrGLAModel

An architecture whose block differs (no MLP, a stateful channel mixer, LayerNorm, an extra norm after the
embedding) sets ``block_class`` to a subclass of :class:`RecurrentBlock`; everything else stays shared. A block
that needs a value computed by an earlier layer of the same forward pass sets ``takes_layer_context``.

A mixer is an ``nn.Module`` built as ``mixer_class(config, layer_idx)`` whose ``forward(x, attention_mask, cache)``
maps ``[B, T, hidden]`` to ``[B, T, hidden]``; a mixer that can run packed sequences (``B = 1``, documents
concatenated, each starting from an empty state; used for training) also takes ``cu_seqlens`` (int ``[N + 1]``
offsets) and sets ``supports_packed_sequences = True``; it reads and writes its state with
:func:`~hf_recurrent.modeling.common.cache.load_state` / ``store_state``, and leaves the state exactly unchanged at
positions where ``attention_mask`` is 0 (left padding). It may define ``_init_weights(self, config)`` for
parameters of its own that need a special initialisation.

Generation follows transformers 5's contract for stateful models: ``forward(input_ids, attention_mask, cache,
use_cache, logits_to_keep)`` returns ``logits`` and ``cache`` (a ``DynamicCache`` of ``LinearAttentionLayer``);
no ``position_ids`` / ``cache_position`` arguments, ``_is_stateful = True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration import RecurrentConfig
from .cuda_graph import DecodeGraph
from .masking import padding_mask, slice_logits_to_keep
from .layers import GatedMLP, RMSNorm, exactly


@dataclass
class RecurrentModelOutput(ModelOutput):
    """``last_hidden_state`` ``[B, T, hidden]``, the ``cache`` holding every layer's state, optional hidden states."""

    last_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class RecurrentCausalLMOutput(ModelOutput):
    """``logits`` ``[B, T', vocab]`` (float32), optional ``loss``, the ``cache`` and optional hidden states."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class RecurrentBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: ``x + mixer(norm(x))``, then ``x + mlp(norm(x))`` when the config has an MLP.

    ``norm_class`` (here RMSNorm) also serves the model's final norm.
    """

    norm_class: ClassVar[type[nn.Module]] = RMSNorm
    mlp_class: ClassVar[type[nn.Module]] = GatedMLP
    """Built as ``mlp_class(hidden_size, mlp_size)`` when ``mlp_size > 0`` (GateLoop: a GELU MLP with biases)."""
    takes_layer_context: ClassVar[bool] = False
    """When true, ``forward`` also receives ``layer_context``: one dict per model forward pass, shared by all
    blocks in order (RWKV-7's value residual: block 0 stores its values, later blocks read them)."""

    def __init__(self, config: RecurrentConfig, layer_idx: int, mixer_class: type[nn.Module]) -> None:
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.mixer_norm = self.norm_class(config.hidden_size, eps=config.norm_eps)
        self.mixer = mixer_class(config, layer_idx)
        if config.mlp_size > 0:
            self.mlp_norm = self.norm_class(config.hidden_size, eps=config.norm_eps)
            self.mlp = self.mlp_class(config.hidden_size, config.mlp_size)
        else:
            self.mlp_norm = self.mlp = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        residual = hidden_states.float() if self.residual_in_fp32 else hidden_states
        packed = {} if cu_seqlens is None else {"cu_seqlens": cu_seqlens}
        mixed = self.mixer(self.mixer_norm(hidden_states), attention_mask=attention_mask, cache=cache, **packed)
        if self.mlp is None:
            return (residual + mixed).to(mixed.dtype)
        if isinstance(self.mlp_norm, RMSNorm):  # the residual add fused into the norm
            hidden_states, normed = self.mlp_norm(mixed, residual=residual)
        else:
            hidden_states = residual + mixed
            normed = self.mlp_norm(hidden_states.to(mixed.dtype))
        if exactly(self.mlp, GatedMLP):  # the residual add fused into its last projection (an extra argument)
            return self.mlp(normed, residual=hidden_states).to(mixed.dtype)
        return (hidden_states + self.mlp(normed)).to(mixed.dtype)


def _check_token_ids(input_ids: torch.Tensor, vocab_size: int, check_range: bool = True) -> None:
    """[batch, length] integer ids within the vocabulary. The range is checked (one read back from the device) except
    when not asked (the CUDA-graph decode step, fed by ``generate``'s own choices; training steps on a GPU, where a
    read back per step would stall the launch queue) and while a CUDA graph is being captured; an id out of range on
    a GPU is otherwise a device-side assert that ends the process's CUDA context."""
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must be [batch, length] integer token ids; got {tuple(input_ids.shape)} "
                         f"{input_ids.dtype}")
    if check_range and input_ids.numel() and not (input_ids.is_cuda and torch.cuda.is_current_stream_capturing()):
        low, high = torch.aminmax(input_ids)
        if low < 0 or high >= vocab_size:
            raise ValueError(f"input_ids must lie in [0, {vocab_size}) (the vocabulary); got ids from {int(low)} "
                             f"to {int(high)}")


def _check_packed(model: RecurrentModel, cu_seqlens: torch.Tensor, tokens: torch.Tensor, cache, use_cache) -> None:
    """Packed sequences are a training layout: batch 1, offsets covering the row, no cache, mixers that know it."""
    if tokens.shape[0] != 1 or cu_seqlens.dim() != 1 or int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != tokens.shape[1]:
        raise ValueError(
            f"cu_seqlens must be 1-D offsets from 0 to the length of a single packed row; got {cu_seqlens.tolist()} "
            f"for inputs of shape {tuple(tokens.shape[:2])}"
        )
    if cache is not None or use_cache:
        raise ValueError("packed sequences (cu_seqlens) are for training: pass use_cache=False and no cache")
    unsupported = {type(b.mixer).__name__ for b in model.layers if not getattr(b.mixer, "supports_packed_sequences", False)}
    if unsupported:
        raise ValueError(f"{', '.join(sorted(unsupported))} cannot run packed sequences (cu_seqlens) with this config")


class RecurrentPreTrainedModel(PreTrainedModel):
    """Weights initialisation and the flags transformers reads; subclasses set ``config_class`` and ``mixer_class``."""

    config_class = RecurrentConfig
    mixer_class: ClassVar[type[nn.Module]]
    block_class: ClassVar[type[RecurrentBlock]] = RecurrentBlock
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RecurrentBlock"]  # RecurrentModel names its own block_class (accelerate matches names)
    _is_stateful = True
    _supports_cache_class = True
    _can_compile_fullgraph = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm) and module.weight is not None:
            nn.init.ones_(module.weight)
        if hasattr(module, "_init_weights") and not isinstance(module, PreTrainedModel):
            module._init_weights(self.config)


class RecurrentModel(RecurrentPreTrainedModel):
    """Embedding, the stack of :class:`RecurrentBlock`, final norm; returns hidden states and the cache."""

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(
            self.block_class(config, i, self.mixer_class) for i in range(config.num_hidden_layers)
        )
        self.norm = self.block_class.norm_class(config.hidden_size, eps=config.norm_eps)
        self.gradient_checkpointing = False
        self._no_split_modules = [self.block_class.__name__]
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RecurrentModelOutput | tuple:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if kwargs.get("position_ids") is not None:
            raise ValueError("recurrent models take no position_ids: order comes from the recurrence itself")
        cu_seqlens = kwargs.get("cu_seqlens")
        if cu_seqlens is not None:
            _check_packed(self, cu_seqlens, input_ids if input_ids is not None else inputs_embeds, cache, use_cache)
            use_cache = False
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        output_hidden_states = output_hidden_states or self.config.output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict

        if inputs_embeds is None:
            _check_token_ids(input_ids, self.config.vocab_size, check_range=not (self.training and input_ids.is_cuda))
            inputs_embeds = self.embed_tokens(input_ids)
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(f"inputs_embeds must be [batch, length, {self.config.hidden_size}]; "
                             f"got {tuple(inputs_embeds.shape)}")
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[0] != inputs_embeds.shape[0]:
            raise ValueError(
                f"attention_mask has batch size {attention_mask.shape[0]}, inputs have {inputs_embeds.shape[0]}"
            )
        mask = padding_mask(attention_mask, inputs_embeds.shape[1])
        layer_cache = cache if use_cache else None

        hidden_states = inputs_embeds
        all_hidden = (hidden_states,) if output_hidden_states else None
        shared = {"layer_context": {}} if self.block_class.takes_layer_context else {}
        for block in self.layers:
            hidden_states = block(hidden_states, attention_mask=mask, cache=layer_cache, cu_seqlens=cu_seqlens, **shared)
            if output_hidden_states:
                all_hidden += (hidden_states,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden = all_hidden[:-1] + (hidden_states,)

        out = RecurrentModelOutput(hidden_states, cache if use_cache else None, all_hidden)
        return out if return_dict else out.to_tuple()


class RecurrentForCausalLM(RecurrentPreTrainedModel, GenerationMixin):
    """The shell plus an LM head (tied to the embedding when ``config.tie_word_embeddings``)."""

    base_model_class: ClassVar[type[RecurrentModel]]
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> RecurrentCausalLMOutput | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        cu_seqlens = kwargs.pop("cu_seqlens", None)
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training and cu_seqlens is None
        plain = labels is None and not output_hidden_states and kwargs.get("position_ids") is None
        if input_ids is not None:  # the range is checked by the base model, which the graph step bypasses
            _check_token_ids(input_ids, self.config.vocab_size, check_range=False)
        elif inputs_embeds is None or inputs_embeds.dim() != 3:
            raise ValueError("pass input_ids [batch, length] or inputs_embeds [batch, length, hidden_size]")
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        chunk = self.config.prefill_chunk_length
        if plain and use_cache and input_ids is not None and length == 1 and self._graphable(input_ids):
            if cache is None:
                cache = DynamicCache(config=self.config)
            logits = self._graph_step(input_ids, cache)
            out = RecurrentCausalLMOutput(None, logits, cache, None)
            return out if return_dict else out.to_tuple()
        if plain and use_cache and chunk and length > chunk and isinstance(logits_to_keep, int):
            outputs = self._prefill_in_chunks(input_ids, inputs_embeds, attention_mask, cache, logits_to_keep, chunk)
        else:
            outputs = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                cache=cache,
                use_cache=use_cache,
                inputs_embeds=inputs_embeds,
                output_hidden_states=output_hidden_states,
                return_dict=True,
                position_ids=kwargs.pop("position_ids", None),
                cu_seqlens=cu_seqlens,
            )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states.to(self.lm_head.weight.dtype)).float()
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        out = RecurrentCausalLMOutput(loss, logits, outputs.cache, outputs.hidden_states)
        return out if return_dict else out.to_tuple()

    def _prefill_in_chunks(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.FloatTensor | None,
        attention_mask: torch.Tensor | None,
        cache: Cache | None,
        logits_to_keep: int,
        chunk: int,
    ) -> RecurrentModelOutput:
        """Run the model over ``chunk``-token pieces with the state carried in ``cache``.

        Only the last ``logits_to_keep`` hidden states are kept (all when 0), so activation memory is bounded by the
        chunk, not the prompt. ``attention_mask`` may include past positions (its last ``T`` columns are the input).
        """
        tokens = input_ids if input_ids is not None else inputs_embeds
        length = tokens.shape[1]
        past = 0 if attention_mask is None else attention_mask.shape[1] - length
        cache = DynamicCache(config=self.config) if cache is None else cache
        kept: list[torch.Tensor] = []
        for start in range(0, length, chunk):
            end = min(length, start + chunk)
            piece = tokens[:, start:end]
            out = self.model(
                input_ids=piece if input_ids is not None else None,
                inputs_embeds=piece if input_ids is None else None,
                attention_mask=None if attention_mask is None else attention_mask[:, : past + end],
                cache=cache,
                use_cache=True,
                return_dict=True,
            )
            kept.append(out.last_hidden_state)
            if logits_to_keep:
                kept = [torch.cat(kept, dim=1)[:, -logits_to_keep:]]
        return RecurrentModelOutput(torch.cat(kept, dim=1), cache, None)

    def _graphable(self, input_ids: torch.Tensor) -> bool:
        return self.config.use_cuda_graphs and input_ids.is_cuda and not torch.is_grad_enabled()

    def _decode_step(self, input_ids: torch.Tensor, cache: Cache) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, cache=cache, use_cache=True, return_dict=True).last_hidden_state
        return self.lm_head(hidden.to(self.lm_head.weight.dtype)).float()

    def _graph_step(self, input_ids: torch.Tensor, cache: Cache) -> torch.Tensor:
        """Decode one token through a CUDA graph captured for this cache (eager for the first step of a cache)."""
        key = (input_ids.shape, self.lm_head.weight.data_ptr(), self.lm_head.weight.dtype)
        runner = self.__dict__.get("_decode_graph")
        if runner is not None and runner.serves(cache, key):
            return runner(input_ids, cache)
        if not cache.has_previous_state():  # nothing to capture yet: the first step allocates the states
            return self._decode_step(input_ids, cache)
        self.__dict__["_decode_graph"] = runner = DecodeGraph(self._decode_step, input_ids, cache, key)
        return runner(input_ids, cache)
