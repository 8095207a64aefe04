//! The Haar DWT/IDWT: perfect reconstruction, orthonormal filters, and
//! autograd gradients that agree with finite differences.

use maelab_worker::model::wave::Haar;
use maelab_worker::model::wave::haar::haar_filters;
use tch::{Device, Kind, Tensor};

fn setup(seed: i64) {
    tch::set_num_threads(1);
    tch::manual_seed(seed);
}

fn max_abs(t: &Tensor) -> f64 {
    f64::try_from(t.abs().max()).unwrap()
}

#[test]
fn idwt_inverts_dwt_on_several_shapes() {
    setup(0);
    let haar = Haar::new(Device::Cpu);
    for shape in [[1, 1, 2, 2], [2, 3, 8, 8], [3, 48, 4, 6], [2, 5, 16, 10]] {
        let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let y = haar.dwt(&x);
        assert_eq!(
            y.size(),
            [shape[0], 4 * shape[1], shape[2] / 2, shape[3] / 2]
        );
        let back = haar.idwt(&y);
        assert_eq!(back.size(), x.size());
        assert!(
            max_abs(&(back - &x)) < 1e-5,
            "round trip failed for {shape:?}"
        );
    }
}

#[test]
fn filters_are_orthonormal_and_energy_is_kept() {
    setup(1);
    // [4, 4]: one flattened 2x2 filter per row
    let f = haar_filters(Kind::Double, Device::Cpu).reshape([4, 4]);
    let gram = f.matmul(&f.tr());
    assert!(max_abs(&(gram - Tensor::eye(4, (Kind::Double, Device::Cpu)))) < 1e-12);

    // Parseval: an orthonormal transform keeps the energy.
    let haar = Haar::new(Device::Cpu);
    let x = Tensor::randn([2, 3, 8, 8], (Kind::Double, Device::Cpu));
    let ex = f64::try_from(x.square().sum(Kind::Double)).unwrap();
    let ey = f64::try_from(haar.dwt(&x).square().sum(Kind::Double)).unwrap();
    assert!((ex - ey).abs() < 1e-9 * ex);
}

#[test]
fn sub_bands_are_band_major_and_see_the_right_edges() {
    setup(2);
    let haar = Haar::new(Device::Cpu);
    // Channel 0 constant, channel 1 with horizontal stripes (varies along H).
    let flat = Tensor::ones([1, 1, 4, 4], (Kind::Float, Device::Cpu));
    let stripes = Tensor::from_slice(&[1.0f32, -1.0, 1.0, -1.0])
        .view([1, 1, 4, 1])
        .expand([1, 1, 4, 4], false);
    let y = haar.dwt(&Tensor::cat(&[flat, stripes], 1)); // [1, 8, 2, 2]
    let energy = |band: i64, chan: i64| {
        f64::try_from(y.get(0).get(band * 2 + chan).square().sum(Kind::Double)).unwrap()
    };
    // LL of the constant channel carries everything, its HF bands nothing.
    assert!(energy(0, 0) > 1.0);
    for band in 1..4 {
        assert!(energy(band, 0) < 1e-10);
    }
    // Stripes along H live only in LH (low along W, high along H).
    assert!(energy(1, 1) > 1.0);
    for band in [0, 2, 3] {
        assert!(energy(band, 1) < 1e-10, "band {band}");
    }
    // high() returns exactly the three HF bands.
    assert_eq!(
        haar.high(&Tensor::zeros([1, 2, 4, 4], (Kind::Float, Device::Cpu)))
            .size(),
        [1, 6, 2, 2]
    );
}

/// Central finite differences of `f(x) . r` against autograd, in f64.
fn check_gradient(f: impl Fn(&Tensor) -> Tensor, shape: [i64; 4], seed: i64) {
    setup(seed);
    let x = Tensor::randn(shape, (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let out = f(&x);
    let r = Tensor::randn(out.size(), (Kind::Double, Device::Cpu));
    (&out * &r).sum(Kind::Double).backward();
    let grad = x.grad().reshape([-1]);
    let x0 = x.detach().reshape([-1]);
    let eps = 1e-6;
    for i in 0..x0.size()[0] {
        let plus = x0.copy();
        let _ = plus.get(i).g_add_scalar_(eps);
        let minus = x0.copy();
        let _ = minus.get(i).g_add_scalar_(-eps);
        let fp = f64::try_from((f(&plus.view(shape)) * &r).sum(Kind::Double)).unwrap();
        let fm = f64::try_from((f(&minus.view(shape)) * &r).sum(Kind::Double)).unwrap();
        let numeric = (fp - fm) / (2.0 * eps);
        let analytic = f64::try_from(grad.get(i)).unwrap();
        assert!(
            (numeric - analytic).abs() < 1e-6,
            "element {i}: {numeric} vs {analytic}"
        );
    }
    // Not vacuous: the gradient is not all zeros.
    assert!(max_abs(&grad) > 1e-3);
}

#[test]
fn dwt_gradient_matches_finite_differences() {
    let haar = Haar::new(Device::Cpu);
    check_gradient(|x| haar.dwt(x), [2, 2, 4, 4], 3);
}

#[test]
fn idwt_gradient_matches_finite_differences() {
    let haar = Haar::new(Device::Cpu);
    check_gradient(|x| haar.idwt(x), [1, 8, 2, 3], 4);
}

#[test]
fn gradient_through_a_nonlinear_use_matches_finite_differences() {
    let haar = Haar::new(Device::Cpu);
    check_gradient(|x| haar.idwt(&haar.dwt(x).tanh()), [1, 2, 4, 2], 5);
}

#[test]
#[should_panic(expected = "even grid")]
fn odd_grid_is_refused() {
    let haar = Haar::new(Device::Cpu);
    let _ = haar.dwt(&Tensor::zeros([1, 1, 5, 4], (Kind::Float, Device::Cpu)));
}
