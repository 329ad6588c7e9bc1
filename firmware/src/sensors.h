// The node's sensors behind one small interface, so main.cpp does not care which chip
// measures what. The drivers are starting points for the usual parts (DS18B20, ADXL345,
// ACS712, a battery divider); calibrate them on the real press before trusting the numbers.
#pragma once

#include <cstdint>

namespace node {

class Sensor {
 public:
  virtual ~Sensor() = default;
  // Called once from setup(); false when the part did not answer (reads will fail too).
  virtual bool begin() { return true; }
  // The current value in the SensorNode field's unit; false when the sensor failed to
  // read (the payload then leaves the field out and counts it in sensor_errors).
  virtual bool read(float& value) = 0;
};

// DS18B20 on a OneWire bus (temperature_c). Non-blocking: each read returns the
// conversion started by the previous one and starts the next (10-bit, ~190 ms).
class Ds18b20 : public Sensor {
 public:
  explicit Ds18b20(std::uint8_t pin) : pin_(pin) {}
  bool begin() override;
  bool read(float& value) override;

 private:
  std::uint8_t pin_;
  bool started_ = false;
};

// ADXL345 on I2C (vibration_g): RMS of the acceleration magnitude around its mean over a
// short burst, i.e. the vibration with gravity taken out, in g.
class Adxl345 : public Sensor {
 public:
  explicit Adxl345(std::uint8_t address = 0x53) : address_(address) {}
  bool begin() override;
  bool read(float& value) override;

 private:
  bool write_register(std::uint8_t reg, std::uint8_t value);
  bool read_registers(std::uint8_t reg, std::uint8_t* out, std::uint8_t count);
  std::uint8_t address_;
};

// ACS712 hall-effect current sensor on an ADC pin (current_a): RMS over one 50 Hz cycle.
// `zero_mv` is the output at 0 A as the ESP32 sees it (after any divider), `mv_per_amp`
// the sensitivity likewise (ACS712-30A: 66 mV/A at 5 V).
class Acs712 : public Sensor {
 public:
  Acs712(std::uint8_t pin, float zero_mv, float mv_per_amp) : pin_(pin), zero_mv_(zero_mv), mv_per_amp_(mv_per_amp) {}
  bool read(float& value) override;

 private:
  std::uint8_t pin_;
  float zero_mv_, mv_per_amp_;
};

// Battery voltage through a resistor divider on an ADC pin (battery_voltage).
class BatteryDivider : public Sensor {
 public:
  BatteryDivider(std::uint8_t pin, float ratio) : pin_(pin), ratio_(ratio) {}
  bool read(float& value) override;

 private:
  std::uint8_t pin_;
  float ratio_;
};

// For a bench board with nothing attached: a slow wave around `base` (PW_SIMULATED_SENSORS).
class Simulated : public Sensor {
 public:
  Simulated(float base, float amplitude, std::uint32_t period_ms) : base_(base), amplitude_(amplitude), period_ms_(period_ms) {}
  bool read(float& value) override;

 private:
  float base_, amplitude_;
  std::uint32_t period_ms_;
};

}  // namespace node
