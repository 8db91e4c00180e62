"""Energy and CO2 of a block of work, measured by codecarbon in offline mode.

codecarbon reads RAPL counters when the kernel exposes them, NVML for NVIDIA
GPUs, and otherwise estimates CPU power from its TDP table times the measured
load. Its first start in a process spends 1-2 s matching the CPU model against
that table, so the tracker is set up on a background thread: ``start()`` returns
at once, and the seconds before the tracker was running are extrapolated at
the mean power it measured (``measured_s`` says how much was really metered).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

DEFAULT_COUNTRY = "USA"
_SETUP_TIMEOUT_S = 60.0

# codecarbon's CPU modes, named by how the number was obtained.
_CPU_METHODS = {
    "intel_rapl": "RAPL",
    "cpu_load": "TDP estimate × load",
    "constant": "TDP estimate",
    "intel_power_gadget": "Intel Power Gadget",
    "apple_powermetrics": "powermetrics",
    "windows_emi": "Windows EMI",
}


def country() -> str:
    """The 3-letter ISO country whose grid mix prices the CO2: $LMFORGE_COUNTRY, default USA."""
    return os.environ.get("LMFORGE_COUNTRY", DEFAULT_COUNTRY).strip().upper() or DEFAULT_COUNTRY


def _silence_codecarbon() -> None:
    # codecarbon sets its logger to INFO on import; what matters reaches the result dict instead.
    logging.getLogger("codecarbon").setLevel(logging.CRITICAL)


def _measurement_method(tracker) -> str:
    """How each part was measured, read from the tracker's hardware list (e.g. 'cpu: RAPL; ram: estimate')."""
    parts = []
    for hardware in getattr(tracker, "_hardware", []):
        kind = type(hardware).__name__
        if kind == "CPU":
            mode = getattr(hardware, "_mode", "unknown")
            parts.append(f"cpu: {_CPU_METHODS.get(mode, mode)}")
        elif kind == "GPU":
            from codecarbon.core.gpu import is_nvidia_system

            parts.append("gpu: NVML" if is_nvidia_system() else "gpu: AMD SMI")
        elif kind == "RAM":
            parts.append("ram: estimate")
        elif kind == "AppleSiliconChip":
            parts.append("apple: powermetrics")
        elif kind == "Raspberry":
            parts.append("raspberry: PMIC")
    return "; ".join(parts) or "unknown"


class EnergyMeter:
    """Measures energy (kWh) and CO2 (kg) between ``start()`` and ``stop()``; never raises.

        meter = EnergyMeter(run_id="r1")
        meter.start()
        work()
        result = meter.stop()  # {"energy_kwh": ..., "co2_kg": ..., "method": "cpu: RAPL; ram: estimate", ...}
    """

    def __init__(self, run_id: str | None = None, country_iso_code: str | None = None,
                 tracking_mode: str | None = None, measure_power_secs: float = 15.0):
        self.run_id = run_id
        self.country = (country_iso_code or country()).upper()
        # One process is metered by itself; under torchrun rank 0 meters the whole machine for all ranks.
        self.tracking_mode = tracking_mode or ("machine" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "process")
        self.measure_power_secs = measure_power_secs
        self._tracker = None
        self._tracker_started: float | None = None
        self._error: str | None = None
        self._note: str | None = None
        self._started: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._start_tracker, name="lmforge-energy", daemon=True)
        self._thread.start()

    def _start_tracker(self) -> None:
        try:
            from codecarbon import OfflineEmissionsTracker
            from codecarbon.input import DataSource

            _silence_codecarbon()
            if self.country not in DataSource().get_global_energy_mix_data():
                self._note = f"unknown country code '{self.country}': world-average carbon intensity used"

            tracker = OfflineEmissionsTracker(
                country_iso_code=self.country,
                project_name="lmforge",
                experiment_name=self.run_id or "lmforge",
                output_methods=[],
                log_level="error",
                tracking_mode=self.tracking_mode,
                measure_power_secs=self.measure_power_secs,
                allow_multiple_runs=True,
            )
            tracker.start()
            self._tracker, self._tracker_started = tracker, time.perf_counter()
        except Exception as exc:  # a meter must never break the work it measures
            self._error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> dict[str, Any]:
        try:
            return self._stop()
        except Exception as exc:
            return {"method": "unavailable", "reason": f"{type(exc).__name__}: {exc}"}

    def _stop(self) -> dict[str, Any]:
        if self._started is None or self._thread is None:
            return {"method": "unavailable", "reason": "the meter was never started"}
        stopped = time.perf_counter()
        duration = stopped - self._started
        self._thread.join(timeout=_SETUP_TIMEOUT_S)
        tracker = self._tracker
        if tracker is None:
            reason = self._error or f"codecarbon did not start within {_SETUP_TIMEOUT_S:.0f} s"
            return {"method": "unavailable", "reason": reason, "duration_s": duration, "country": self.country}
        tracker.stop()
        data = tracker.final_emissions_data
        if data is None:
            return {"method": "unavailable", "reason": "codecarbon returned no measurement", "duration_s": duration}
        measured = max(float(data.duration), 0.0)
        # The seconds before the tracker ran are priced at the mean power of the metered window.
        scale = duration / measured if measured > 0 else 1.0
        energy = float(data.energy_consumed) * scale
        return {
            "energy_kwh": energy,
            "co2_kg": float(data.emissions) * scale,
            "duration_s": duration,
            "measured_s": measured,
            "method": _measurement_method(tracker),
            "cpu_model": data.cpu_model,
            "gpu_model": data.gpu_model or None,
            "country": data.country_iso_code or self.country,
            "tracking_mode": data.tracking_mode,
            "cpu_energy_kwh": float(data.cpu_energy) * scale,
            "gpu_energy_kwh": float(data.gpu_energy) * scale,
            "ram_energy_kwh": float(data.ram_energy) * scale,
            "mean_power_w": energy * 3.6e6 / duration if duration > 0 else 0.0,
            "carbon_intensity_g_per_kwh": float(data.emissions) / float(data.energy_consumed) * 1000
            if data.energy_consumed else None,
            "codecarbon_version": data.codecarbon_version,
            **({"note": self._note} if self._note else {}),
        }
