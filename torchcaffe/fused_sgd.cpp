// The SGD solver's update in one pass over each param (fused_sgd.py says
// when it is used): per element, in this order and with these roundings,
//   diff    = fma(decay, data, diff)        (L2 regularization; skipped at decay 0)
//   history = history * momentum + diff * rate   (three roundings, no fma)
//   diff    = history
//   data    = data - history
// the same float operations the solver's torch ops perform one pass each.
// Build with -ffp-contract=off so that the compiler fuses nothing else.
#include <cmath>
#include <cstddef>
#include <thread>
#include <vector>

namespace {

template <bool Decay>
void update_range(float* data, float* diff, float* history, size_t begin, size_t end,
                  float decay, float momentum, float rate) {
    for (size_t i = begin; i < end; ++i) {
        float gradient = Decay ? std::fma(decay, data[i], diff[i]) : diff[i];
        float kept = history[i] * momentum;
        float step = gradient * rate;
        float value = kept + step;
        history[i] = value;
        diff[i] = value;
        data[i] = data[i] - value;
    }
}

void update(float* data, float* diff, float* history, size_t begin, size_t end, float decay,
            float momentum, float rate) {
    if (decay != 0.0f)
        update_range<true>(data, diff, history, begin, end, decay, momentum, rate);
    else
        update_range<false>(data, diff, history, begin, end, decay, momentum, rate);
}

}  // namespace

extern "C" void torchcaffe_sgd_update(float* data, float* diff, float* history, size_t count,
                                      float decay, float momentum, float rate, int threads) {
    const size_t min_share = size_t(1) << 18;  // below this a thread costs more than it saves
    size_t parts = threads > 1 ? size_t(threads) : 1;
    while (parts > 1 && count / parts < min_share) --parts;
    if (parts == 1) {
        update(data, diff, history, 0, count, decay, momentum, rate);
        return;
    }
    size_t share = (count / parts + 15) & ~size_t(15);  // whole cache lines per thread
    std::vector<std::thread> helpers;
    for (size_t part = 1; part < parts; ++part) {
        size_t begin = part * share, end = part + 1 == parts ? count : begin + share;
        if (begin < end)
            helpers.emplace_back(update, data, diff, history, begin, end, decay, momentum, rate);
    }
    update(data, diff, history, 0, share < count ? share : count, decay, momentum, rate);
    for (auto& helper : helpers) helper.join();
}
