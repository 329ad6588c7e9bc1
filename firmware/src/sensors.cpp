#include "sensors.h"

#include <Arduino.h>
#include <DallasTemperature.h>
#include <OneWire.h>
#include <Wire.h>
#include <math.h>

namespace node {

// ---- DS18B20 ---------------------------------------------------------------------------
namespace {
OneWire* one_wire = nullptr;
DallasTemperature* dallas = nullptr;
}  // namespace

bool Ds18b20::begin() {
  if (dallas == nullptr) {  // one bus, one probe: enough for a press
    one_wire = new OneWire(pin_);
    dallas = new DallasTemperature(one_wire);
  }
  dallas->begin();
  if (dallas->getDeviceCount() == 0) return false;
  dallas->setResolution(10);
  dallas->setWaitForConversion(false);
  dallas->requestTemperatures();
  started_ = true;
  return true;
}

bool Ds18b20::read(float& value) {
  if (!started_ && !begin()) return false;  // a probe plugged in later is picked up
  const float celsius = dallas->getTempCByIndex(0);
  dallas->requestTemperatures();  // the next read gets this conversion
  if (celsius == DEVICE_DISCONNECTED_C) {
    started_ = false;
    return false;
  }
  value = celsius;
  return true;
}

// ---- ADXL345 ---------------------------------------------------------------------------
namespace {
constexpr std::uint8_t kDevId = 0x00, kBwRate = 0x2C, kPowerCtl = 0x2D, kDataFormat = 0x31, kDataX0 = 0x32;
constexpr float kGPerLsb = 0.0039f;  // full resolution
constexpr int kBurst = 32;           // 40 ms at 800 Hz
}  // namespace

bool Adxl345::write_register(std::uint8_t reg, std::uint8_t value) {
  Wire.beginTransmission(address_);
  Wire.write(reg);
  Wire.write(value);
  return Wire.endTransmission() == 0;
}

bool Adxl345::read_registers(std::uint8_t reg, std::uint8_t* out, std::uint8_t count) {
  Wire.beginTransmission(address_);
  Wire.write(reg);
  if (Wire.endTransmission(false) != 0) return false;
  if (Wire.requestFrom(address_, count) != count) return false;
  for (std::uint8_t i = 0; i < count; ++i) out[i] = static_cast<std::uint8_t>(Wire.read());
  return true;
}

bool Adxl345::begin() {
  Wire.begin();
  std::uint8_t id = 0;
  if (!read_registers(kDevId, &id, 1) || id != 0xE5) return false;
  return write_register(kDataFormat, 0x0B)  // full resolution, +-16 g
         && write_register(kBwRate, 0x0D)   // 800 Hz
         && write_register(kPowerCtl, 0x08);  // measure
}

bool Adxl345::read(float& value) {
  float magnitude[kBurst];
  float mean = 0;
  for (int i = 0; i < kBurst; ++i) {
    std::uint8_t raw[6];
    if (!read_registers(kDataX0, raw, sizeof raw)) return false;
    const float x = static_cast<std::int16_t>(raw[1] << 8 | raw[0]) * kGPerLsb;
    const float y = static_cast<std::int16_t>(raw[3] << 8 | raw[2]) * kGPerLsb;
    const float z = static_cast<std::int16_t>(raw[5] << 8 | raw[4]) * kGPerLsb;
    magnitude[i] = sqrtf(x * x + y * y + z * z);
    mean += magnitude[i];
    delayMicroseconds(1250);
  }
  mean /= kBurst;
  if (mean < 0.2f) return false;  // no gravity at all: the part is not answering sensibly
  float sum = 0;
  for (float m : magnitude) sum += (m - mean) * (m - mean);
  value = sqrtf(sum / kBurst);
  return true;
}

// ---- ACS712 ----------------------------------------------------------------------------
bool Acs712::read(float& value) {
  constexpr int kSamples = 100;  // ~20 ms: one 50 Hz cycle
  float sum_sq = 0, sum_mv = 0;
  for (int i = 0; i < kSamples; ++i) {
    const float mv = static_cast<float>(analogReadMilliVolts(pin_));
    sum_mv += mv;
    const float amps = (mv - zero_mv_) / mv_per_amp_;
    sum_sq += amps * amps;
    delayMicroseconds(200);
  }
  const float mean_mv = sum_mv / kSamples;
  if (mean_mv < 50.0f || mean_mv > 3250.0f) return false;  // output stuck at a rail: unplugged
  value = sqrtf(sum_sq / kSamples);
  return true;
}

// ---- Battery ---------------------------------------------------------------------------
bool BatteryDivider::read(float& value) {
  const float volts = analogReadMilliVolts(pin_) / 1000.0f * ratio_;
  if (volts < 0.5f) return false;  // divider not connected
  value = volts;
  return true;
}

// ---- Simulated -------------------------------------------------------------------------
bool Simulated::read(float& value) {
  const float phase = static_cast<float>(millis() % period_ms_) / static_cast<float>(period_ms_);
  value = base_ + amplitude_ * sinf(2.0f * static_cast<float>(PI) * phase);
  return true;
}

}  // namespace node
