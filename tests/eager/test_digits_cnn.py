"""Real data: a conv-bn-relu CNN trained on scikit-learn's digits keeps its accuracy through
eager static PTQ and QAT, and fxquant's PTQ model equals upstream's."""

from __future__ import annotations

import copy

import torch
import torch.ao.quantization as tq

import fxquant
import fxquant.eager as fe


def _ptq(model, calibration, qconfig, ns=fe, fuse_groups=None):
    model = ns.fuse_modules(copy.deepcopy(model).eval(), fuse_groups)
    model.qconfig = qconfig
    prepared = ns.prepare(model)
    prepared(calibration)
    return ns.convert(prepared)


def test_static_ptq_loses_under_one_point(digits, digits_cnn, digits_eval, models):
    float_accuracy = digits_eval.accuracy(digits_cnn, digits.images, digits)
    calibration = digits.images[digits.train[:256]]
    quantized = _ptq(digits_cnn, calibration, fxquant.get_default_qconfig("x86"),
                     fuse_groups=models.FUSE_GROUPS)
    quantized_accuracy = digits_eval.accuracy(quantized, digits.images, digits)
    assert float_accuracy > 0.95
    assert float_accuracy - quantized_accuracy < 0.01, (float_accuracy, quantized_accuracy)


def test_static_ptq_equals_upstream_on_real_digits(digits, digits_cnn, models):
    upstream_model = models.ConvBnReLUNet(tq)
    upstream_model.load_state_dict(digits_cnn.state_dict())
    calibration = digits.images[digits.train[:256]]
    ours = _ptq(digits_cnn, calibration, fxquant.default_per_channel_qconfig,
                fuse_groups=models.FUSE_GROUPS)
    theirs = _ptq(upstream_model, calibration, tq.default_per_channel_qconfig, ns=tq,
                  fuse_groups=models.FUSE_GROUPS)
    test_images = digits.images[digits.test]
    assert torch.equal(ours(test_images), theirs(test_images))


def test_qat_loses_under_one_point(digits, digits_cnn, digits_eval, models):
    float_accuracy = digits_eval.accuracy(digits_cnn, digits.images, digits)
    model = fe.fuse_modules_qat(copy.deepcopy(digits_cnn).train(), models.FUSE_GROUPS)
    model.qconfig = fxquant.get_default_qat_qconfig("x86")
    prepared = fe.prepare_qat(model)
    torch.manual_seed(0)
    digits_eval.train(prepared, digits.images, digits, epochs=2, lr=1e-3)
    quantized = fe.convert(prepared.eval())
    assert type(quantized.conv1).__name__ == "ConvReLU2d"
    quantized_accuracy = digits_eval.accuracy(quantized, digits.images, digits)
    assert float_accuracy - quantized_accuracy < 0.01, (float_accuracy, quantized_accuracy)
